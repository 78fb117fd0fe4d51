"""Question trees: YAML → typed spec → validated networkx graph.

Load, check and compile in separate steps (``parse_tree``, ``compile_spec``) or
all at once with ``compile_tree``.
"""

from explainer.trees.catalogue import Artifact, Catalogue, builtin_catalogue, load_catalogue
from explainer.trees.compiler import CompiledTree, compile_spec, compile_tree, default_tree_path
from explainer.trees.parse import parse_tree
from explainer.trees.problems import Problem, TreeError

__all__ = [
    "Artifact", "Catalogue", "CompiledTree", "Problem", "TreeError", "builtin_catalogue",
    "compile_spec", "compile_tree", "default_tree_path", "load_catalogue", "parse_tree",
]

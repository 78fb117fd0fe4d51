"""Question trees shipped with explainer (YAML data; see docs/question-trees.md)."""

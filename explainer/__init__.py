"""explainer: tells a person why an image looks AI-generated."""

__version__ = "0.1.0"

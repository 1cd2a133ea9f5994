"""The networks the search trains: plain ``nn.Module``s, nothing search-specific."""

from models.simple_nn import SimpleNN

__all__ = ["SimpleNN"]

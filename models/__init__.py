"""The networks the search trains: plain ``nn.Module``s, nothing search-specific."""

from models.simple_nn import SimpleNN
from models.tabular import TabularNN

__all__ = ["SimpleNN", "TabularNN"]

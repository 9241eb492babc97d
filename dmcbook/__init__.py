"""dmcbook: models, data, training and pictures for a companion book to four image-classification
papers (DMCNet, GDFRNet, ResNeSkt, DRSTN)."""
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]

"""Task definitions: one module per task and the registry that names them."""

"""Built-in task definitions (package data) and the catalog that reads them."""

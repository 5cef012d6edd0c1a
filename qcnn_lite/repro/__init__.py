"""The paper's tables and figures, rebuilt from this package: accuracy, rows, the searched settings, reproduce."""

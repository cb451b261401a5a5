"""What to build: the settings tables, image configs, recipes and where things live."""

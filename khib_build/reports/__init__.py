"""What is said about an image: info, legal-info, size, graph, lint, the format reference."""

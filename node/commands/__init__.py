"""One module per CLI command group; ``node.cli`` builds the parser and dispatches here."""

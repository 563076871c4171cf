"""The MCP server: entropy as tools for language models (DESIGN §7)."""

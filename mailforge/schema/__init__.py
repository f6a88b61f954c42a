"""The typed models of the control API's requests and answers (pydantic v2), from which
both the validation and the OpenAPI 3.1 document are generated. One module per
concept; ``base`` holds the conventions every model follows. Outside ``api/`` so that
the service layer, the CLI and the MCP server take the same typed input."""

"""Chimera's local backend and operator tools: not shipped to Lambda.

The CLI, the HTTP server, the report, the event-schema generator, the ASL executor and the
embedded adapters (SQLite, an in-process bus, files) live here, outside the `chimera`
package that the Lambda layer carries.
"""

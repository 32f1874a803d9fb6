"""The sync server (websockets + Postgres). Arrives with the server issue.

It will import `sync` and never Qt; see `../shared/PRODUCT.md`.
"""

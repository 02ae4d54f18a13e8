"""Code generated from proto/ by `make gen` (python -m pcbook.codegen); not committed."""

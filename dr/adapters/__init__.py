"""Adapters: the only package that imports third-party clients (hvac, kubernetes, boto3).

Each adapter maps its library's exceptions to `dr.errors` in one place, so
the layers above see `TransientError` / `PermanentError`, never a library's
own exception types.
"""

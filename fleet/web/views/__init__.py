"""The product UI: server-rendered pages that obey the same restrict() as the API."""

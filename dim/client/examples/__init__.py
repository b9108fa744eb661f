"""Small programs written against the client core, as examples of its Deferred API."""

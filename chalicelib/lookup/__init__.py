"""The merchant's lookup page: recipients find their delivery by order number and a second factor."""

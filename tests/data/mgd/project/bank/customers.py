"""People who hold accounts."""


class Customer:
    """A customer with a contact address."""

    def __init__(self, name: str, email: str):
        self.name = name
        self.email = email

    def greeting(self) -> str:
        return f"Dear {self.name}"

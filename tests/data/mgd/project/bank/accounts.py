"""Accounts that hold money for a customer."""

from bank.customers import Customer


class Account:
    """A balance owned by one customer."""

    def __init__(self, owner: Customer, balance: float = 0.0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount: float) -> "Account":
        self.balance += amount
        return self

    def withdraw(self, amount: float) -> "Account":
        self.balance -= amount
        return self

    def statement(self) -> str:
        return f"{self.owner.name}: {self.balance:.2f}"

"""Opens an account and moves money."""

from bank.accounts import Account
from bank.customers import Customer


def run() -> None:
    acct = Account(Customer("ann", "ann@example.com"), 10.0)
    acct.deposit(5.0)

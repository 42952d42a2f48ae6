"""Pricing helpers."""

from shop.models import Cart, Item

TAX_RATE = 0.2


def with_tax(amount: float, rate: float = TAX_RATE) -> float:
    return amount * (1 + rate)


def checkout(cart: Cart) -> float:
    return with_tax(cart.total())


def cheapest(items: list[Item]) -> Item:
    return min(items, key=lambda item: item.price)

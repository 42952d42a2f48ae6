"""Entry point that uses the shop package."""

from shop import pricing
from shop.models import Cart, Item


def main() -> None:
    cart = Cart()
    cart.add_item(Item("tea", 3.5), quantity=2)
    print(pricing.checkout(cart))

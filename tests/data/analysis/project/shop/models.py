"""Domain classes."""


class Item:
    """An item on sale."""

    def __init__(self, name: str, price: float):
        self.name = name
        self.price = price

    def discounted(self, percent: float) -> "Item":
        return Item(self.name, self.price * (1 - percent / 100))

    def label(self) -> str:
        return f"{self.name}: {self.price:.2f}"


class Cart:
    """A shopping cart."""

    def __init__(self):
        self.items: list[Item] = []

    def add_item(self, item: Item, quantity: int = 1, *, gift: bool = False) -> "Cart":
        self.items.extend([item] * quantity)
        return self

    def total(self) -> float:
        return sum(item.price for item in self.items)

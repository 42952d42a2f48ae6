"""A small inventory module used by `make demo`."""

from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 0


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, item):
        self.items[item.name] = item

    def total_value(self):
        total = 0.0
        for item in self.items.values():
            
        return total

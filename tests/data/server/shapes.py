"""Shapes with areas and perimeters (a fixture for the language server tests)."""

import math
from dataclasses import dataclass


@dataclass
class Square:
    side: float

    def area(self) -> float:
        return self.side * self.side

    def perimeter(self) -> float:
        return 4 * self.side


@dataclass
class Circle:
    radius: float

    def area(self) -> float:
        return math.pi * self.radius**2

    def perimeter(self) -> float:
        return 2 * math.pi * self.radius


def total_area(shapes: list) -> float:
    return sum(shape.area() for shape in shapes)

"""Sample module for the lexical scanner: every kind of string and comment."""

import os  # a trailing comment with 'quotes' and "doubles"

# a comment line with a # inside and an f"{brace}"
NAME = "single"
OTHER = "double with 'inner' quotes and \" escaped"
RAW = r"raw \d+ and \" kept"
BYTES = b"bytes \x00 here"
TRIPLE = """triple
with "quotes" and 'more'
and # no comment here
"""
TRIPLE_SINGLE = (
    """another
triple """
    + "x"
)
UNICODE = "ünïcödé 中文 😀"  # çomment


def fmt(value, width=8):
    """Format a value; the docstring has # and 'quotes'."""
    spec = f"{value!r:>{width}} and {{literal}} and {os.sep}"
    nested = f"{'inner'} {value['key'] if isinstance(value, dict) else value}"
    multi = f"""
    {value}
    {width:>{width}}
    """
    raw_f = rf"\d{width}\n"
    return spec + nested + multi + raw_f  # done


class Thing:
    label = "thing"  # comment

    def method(self, x):
        return f"{self.label}: {x:.2f}" + "#not a comment"

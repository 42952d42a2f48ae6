"""Render a `tmux capture-pane -e -p` dump (text with SGR escapes) to a PNG, with Pillow.

Usage: python ansi_to_png.py capture.ansi out.png [--cols 100]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono{}.ttf"
BG, FG = (30, 30, 46), (205, 214, 244)
# The 16 ANSI colours (a dark theme, close to Catppuccin Mocha).
BASE16 = [
    (69, 71, 90), (243, 139, 168), (166, 227, 161), (249, 226, 175),
    (137, 180, 250), (245, 194, 231), (148, 226, 213), (186, 194, 222),
    (88, 91, 112), (243, 139, 168), (166, 227, 161), (249, 226, 175),
    (137, 180, 250), (245, 194, 231), (148, 226, 213), (166, 173, 200),
]
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def xterm256(n: int) -> tuple[int, int, int]:
    """An xterm 256-colour index as RGB."""
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + (n - 232) * 10
    return v, v, v


class Style:
    """The current SGR state."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fg, self.bg, self.bold, self.italic, self.reverse, self.underline = None, None, False, False, False, False

    def apply(self, params: str) -> None:
        codes = [int(p) if p else 0 for p in re.split("[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 3:
                self.italic = True
            elif c == 4:
                self.underline = True
            elif c == 7:
                self.reverse = True
            elif c == 22:
                self.bold = False
            elif c == 23:
                self.italic = False
            elif c == 24:
                self.underline = False
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASE16[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASE16[c - 90 + 8]
            elif 40 <= c <= 47:
                self.bg = BASE16[c - 40]
            elif 100 <= c <= 107:
                self.bg = BASE16[c - 100 + 8]
            elif c == 39:
                self.fg = None
            elif c == 49:
                self.bg = None
            elif c in (38, 48) and i + 1 < len(codes):
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    rgb, i = xterm256(codes[i + 2]), i + 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    rgb, i = tuple(codes[i + 2 : i + 5]), i + 4
                else:
                    rgb = None
                if c == 38:
                    self.fg = rgb
                else:
                    self.bg = rgb
            i += 1


def render(text: str, cols: int, size: int = 16) -> Image.Image:
    """The terminal screen as an image."""
    fonts = {(b, i): ImageFont.truetype(FONTS.format(n), size) for (b, i), n in {
        (False, False): "", (True, False): "-Bold", (False, True): "-Oblique", (True, True): "-BoldOblique"}.items()}
    cw, ch = int(fonts[(False, False)].getlength("M")), int(size * 1.35)
    lines = text.rstrip("\n").split("\n")
    pad = 12
    img = Image.new("RGB", (cols * cw + 2 * pad, len(lines) * ch + 2 * pad), BG)
    draw = ImageDraw.Draw(img)
    style = Style()
    for row, line in enumerate(lines):
        col = 0
        pieces = SGR.split(line)  # text, params, text, params, ...
        for k, piece in enumerate(pieces):
            if k % 2 == 1:
                style.apply(piece)
                continue
            for char in piece:
                fg, bg = style.fg or FG, style.bg or BG
                if style.reverse:
                    fg, bg = bg, fg
                x, y = pad + col * cw, pad + row * ch
                if bg != BG:
                    draw.rectangle([x, y, x + cw, y + ch], fill=bg)
                draw.text((x, y + (ch - size) // 2), char, font=fonts[(style.bold, style.italic)], fill=fg)
                if style.underline:
                    draw.line([x, y + ch - 2, x + cw, y + ch - 2], fill=fg)
                col += 1
    return img


def main() -> None:
    """Read the capture, write the PNG."""
    ap = argparse.ArgumentParser()
    ap.add_argument("capture")
    ap.add_argument("out")
    ap.add_argument("--cols", type=int, default=100)
    args = ap.parse_args()
    render(Path(args.capture).read_text(encoding="utf-8"), args.cols).save(args.out)


if __name__ == "__main__":
    main()

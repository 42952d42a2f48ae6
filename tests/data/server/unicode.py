# Non-ASCII lines: astral emoji (two UTF-16 units), CJK, combining marks.
greeting = "héllo wörld"
snake = "🐍 python"  # 🐍 takes two UTF-16 code units
label = "中文标签"  # 中文 is CJK
accent = "café"  # e + U+0301 COMBINING ACUTE ACCENT
thumbs = "👍🏽 ok"
print(snake, label, accent, thumbs)

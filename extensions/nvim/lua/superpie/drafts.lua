-- Pure draft logic, no editor state: server items -> drafts at the cursor, partial accepts, typing
-- through a draft. Positions: `col` is a 0-based byte column; LSP characters are counted in the
-- negotiated encoding ("utf-8", "utf-16" or "utf-32").
local M = {}

--- Byte column of an LSP character offset in `line`.
function M.byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local units, i = 0, 1
  while i <= #line and units < character do
    local b = line:byte(i)
    local len = b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1
    -- A 4-byte UTF-8 sequence is a surrogate pair (2 units) in UTF-16.
    units = units + ((encoding == 'utf-16' and len == 4) and 2 or 1)
    i = i + len
  end
  return i - 1
end

local function text_of(insert_text)
  if type(insert_text) == 'table' then
    return insert_text.value or ''
  end
  return insert_text or ''
end

local function starts_with(s, prefix)
  return s:sub(1, #prefix) == prefix
end

--- Drafts from an inlineCompletion answer (list or array), relative to the cursor at byte `col` of
--- `line` (0-based line `row`). An item whose range starts before the cursor must repeat what lies
--- between; that part is dropped from its text. Empty and repeated drafts are dropped.
function M.from_items(result, line, row, col, encoding)
  local items = result and (result.items or result) or {}
  local drafts, seen = {}, {}
  for _, item in ipairs(items) do
    local text = text_of(item.insertText)
    local ok = true
    local range = item.range
    if range and range.start and range.start.line == row then
      local start = M.byte_col(line, range.start.character, encoding)
      if start < col then
        local typed = line:sub(start + 1, col)
        ok = starts_with(text, typed)
        text = text:sub(#typed + 1)
      end
    elseif range and range.start and range.start.line ~= row then
      ok = false
    end
    if ok and text:match('%S') and not seen[text] then
      seen[text] = true
      drafts[#drafts + 1] = { text = text, command = item.command }
    end
  end
  return drafts
end

--- The next part of `text` to accept for `kind`: "all", "line" or "word".
function M.part(text, kind)
  if kind == 'line' then
    local first = text:match('^[^\n]*')
    if first ~= '' then
      return first
    end
    return text:match('^\n[^\n]*') or text
  end
  if kind == 'word' then
    return text:match('^[ \t]*[%w_]+') or text:match('^[ \t]*[^%w_%s]+') or text:match('^[ \t]*\n[ \t]*')
      or text:match('^%s+') or text
  end
  return text
end

--- The drafts left after `accepted` was inserted (or typed): those that continue with it, shortened.
function M.advance(drafts, index, accepted)
  local left, new_index = {}, nil
  for i, d in ipairs(drafts) do
    if starts_with(d.text, accepted) and #d.text > #accepted then
      left[#left + 1] = { text = d.text:sub(#accepted + 1), command = d.command, partial = true }
      if i == index then
        new_index = #left
      end
    end
  end
  return left, new_index or 1
end

--- The lines of `text` (a trailing newline gives a trailing empty line, as nvim_buf_set_text wants).
function M.lines(text)
  return vim.split(text, '\n', { plain = true })
end

--- How a draft line is drawn as virtual text: tabs as spaces, control characters as ^X (virtual text
--- cannot hold a NUL, and versions differ in how they draw the others).
function M.display(line, tabstop)
  line = line:gsub('\t', string.rep(' ', tabstop or 8))
  return (line:gsub('[%z\1-\31\127]', function(c)
    local b = c:byte()
    return b == 127 and '^?' or '^' .. string.char(b + 64)
  end))
end

--- `s` as complete() may take it: Neovim turns a Lua string holding a NUL into a Blob, which
--- complete() rejects (E976). In a buffer line, Vim keeps a NUL as NL: insert that instead.
local function vim_string(s)
  return (s:gsub('%z', '\n'))
end

--- Complete-items (for `complete()`) from a textDocument/completion answer, and the 1-based start
--- column. Multi-line drafts show their first line; the rest is inserted on CompleteDone.
function M.menu_items(result, line, row, col, encoding)
  local items = result and (result.items or result) or {}
  local start = col
  local out = {}
  for rank, item in ipairs(items) do
    local edit = item.textEdit
    local text = edit and edit.newText or item.insertText or item.label
    local from = col
    if edit and edit.range and edit.range.start.line == row then
      from = M.byte_col(line, edit.range.start.character, encoding)
    end
    start = math.min(start, from)
    local doc = item.documentation
    out[#out + 1] = {
      from = from,
      text = text,
      command = item.command,
      item = {
        word = vim_string(M.lines(text)[1]),
        abbr = M.display(item.label or ''),
        menu = '[superpie]',
        info = vim_string(type(doc) == 'table' and doc.value or doc or text),
        icase = 1,
        dup = 1,
        empty = 0,
        user_data = 'superpie:' .. rank,
      },
    }
  end
  -- Every word must start at the common start column: prepend what lies between.
  for _, o in ipairs(out) do
    if o.from > start then
      local gap = line:sub(start + 1, o.from)
      o.text = gap .. o.text
      o.item.word = vim_string(gap) .. o.item.word
    end
  end
  return out, start + 1
end

return M

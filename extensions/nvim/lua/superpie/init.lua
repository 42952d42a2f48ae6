-- superpie for Neovim (0.7 and later): starts `superpie serve` with vim.lsp, shows the server's top
-- draft as ghost text while typing, accepts all of it, a line or a word, cycles drafts, and lists the
-- drafts in the completion menu. Completion logic lives in the server; this file converts and draws.
local drafts = require('superpie.drafts')

local M = {}

local defaults = {
  cmd = { 'superpie', 'serve' }, -- add '--model', DIR or '--log-level', 'debug' here
  filetypes = { 'python' },
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'setup.cfg' },
  init_options = {}, -- the server's options, camelCase and nested, e.g. { completion = { drafts = 3 } }
  ghost_text = true, -- request drafts automatically while typing in insert mode
  debounce_ms = 150,
  hl_group = 'SuperpieGhost',
  keys = {
    accept = '<Tab>', -- the whole draft (falls back to a plain <Tab> when no draft is shown)
    accept_line = '<M-l>',
    accept_word = '<M-w>',
    next = '<M-n>',
    prev = '<M-p>',
    dismiss = '<C-]>',
    menu = '<M-m>', -- all drafts in the completion menu
  },
}

M.config = vim.deepcopy(defaults)
local ns = vim.api.nvim_create_namespace('superpie')
local clients = {} -- root_dir -> client id
local bufs = {} -- bufnr -> { timer, request = {client, id}, sug = {row, col, tick, drafts, index} }
local progress = { state = 'off', message = '' }
local menu_pending = {} -- user_data -> { text, command }
local NVIM_0_10 = vim.fn.has('nvim-0.10') == 1
local NVIM_0_11 = vim.fn.has('nvim-0.11') == 1

-- Client methods became colon calls in 0.11 (the dot form is deprecated there, and the colon form
-- does not exist before).
local function c_request(client, method, params, handler, bufnr)
  if NVIM_0_11 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function c_cancel(client, id)
  if NVIM_0_11 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

local function buf_state(buf)
  bufs[buf] = bufs[buf] or {}
  return bufs[buf]
end

local function client_for(buf)
  for _, id in pairs(clients) do
    local client = vim.lsp.get_client_by_id(id)
    if client and vim.lsp.buf_is_attached(buf, id) then
      return client
    end
  end
  return nil
end

local function find_root(path)
  local dir = vim.fn.fnamemodify(path, ':p:h')
  local home = vim.loop.os_homedir()
  while dir and dir ~= '' do
    for _, marker in ipairs(M.config.root_markers) do
      if vim.loop.fs_stat(dir .. '/' .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ':h')
    if parent == dir or dir == home then
      break
    end
    dir = parent
  end
  return vim.fn.fnamemodify(path, ':p:h')
end

-------------------------------------------------------------------------------- ghost text

local function clear(buf)
  local st = buf_state(buf)
  st.sug = nil
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  end
end

local function render(buf)
  vim.api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  local sug = buf_state(buf).sug
  if not sug then
    return
  end
  local lines = drafts.lines(sug.drafts[sug.index].text)
  local tabstop = vim.bo[buf].tabstop
  for i, l in ipairs(lines) do
    lines[i] = drafts.display(l, tabstop)
  end
  local hl = M.config.hl_group
  local line = vim.api.nvim_buf_get_lines(buf, sug.row, sug.row + 1, false)[1] or ''
  local opts = { virt_text = { { lines[1], hl } }, hl_mode = 'combine' }
  if NVIM_0_10 then
    opts.virt_text_pos = 'inline'
  elseif sug.col >= #line then
    opts.virt_text_pos = 'overlay'
  else
    opts.virt_text_pos = 'eol' -- text after the cursor: old versions cannot draw between characters
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { lines[i], hl } }
    end
  end
  vim.api.nvim_buf_set_extmark(buf, ns, sug.row, sug.col, opts)
end

local function cancel(buf)
  local st = buf_state(buf)
  if st.request then
    pcall(c_cancel, st.request.client, st.request.id)
    st.request = nil
  end
end

local function in_insert()
  return vim.api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

--- Ask the server for drafts at the cursor now (`invoked`: asked for explicitly, not while typing).
function M.request(invoked)
  local buf = vim.api.nvim_get_current_buf()
  local client = client_for(buf)
  if not client then
    return
  end
  cancel(buf)
  local st = buf_state(buf)
  local win = vim.api.nvim_get_current_win()
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = invoked and 1 or 2 }
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local ok, id = c_request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if st.request and st.request.id == id then
      st.request = nil
    end
    if err or not vim.api.nvim_buf_is_valid(buf) or vim.api.nvim_get_current_buf() ~= buf or not in_insert() then
      return
    end
    local now = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_buf_get_changedtick(buf) ~= tick or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      return -- the text or the cursor moved on: a newer request follows
    end
    local row, col = cursor[1] - 1, cursor[2]
    local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
    local list = drafts.from_items(result, line, row, col, client.offset_encoding)
    if #list == 0 then
      clear(buf)
      return
    end
    st.sug = { row = row, col = col, tick = tick, drafts = list, index = 1, line_before = line:sub(1, col) }
    render(buf)
  end, buf)
  if ok then
    st.request = { client = client, id = id }
  end
end

local function schedule(buf)
  local st = buf_state(buf)
  if not st.timer then
    st.timer = vim.loop.new_timer()
  end
  st.timer:stop()
  st.timer:start(
    M.config.debounce_ms,
    0,
    vim.schedule_wrap(function()
      if vim.api.nvim_get_current_buf() == buf and in_insert() and vim.fn.pumvisible() == 0 then
        M.request(false)
      end
    end)
  )
end

-- Text changed or the cursor moved in insert mode: keep the draft when the person typed its next
-- characters, else drop it and ask again after the debounce.
local function on_edit(buf)
  local st = buf_state(buf)
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local sug = st.sug
  if sug and sug.tick == tick and sug.row == row and sug.col == col then
    return -- nothing new (our own accept, or a second event for the same keystroke)
  end
  if sug and row == sug.row and col > sug.col then
    local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
    local typed = line:sub(sug.col + 1, col)
    local left, index = drafts.advance(sug.drafts, sug.index, typed)
    if #left > 0 and line:sub(1, sug.col) == sug.line_before then
      sug.drafts, sug.index, sug.col, sug.tick = left, index, col, tick
      sug.line_before = line:sub(1, col)
      render(buf)
      return
    end
  end
  clear(buf)
  cancel(buf)
  if M.config.ghost_text and vim.fn.pumvisible() == 0 then
    schedule(buf)
  end
end

local function notify_accept(buf, draft, partial)
  local client = client_for(buf)
  local cmd = draft.command
  if not client or not cmd or not cmd.command then
    return
  end
  local args = vim.deepcopy(cmd.arguments or {})
  if partial and type(args[1]) == 'table' then
    args[1].partial = true
  end
  c_request(client, 'workspace/executeCommand', { command = cmd.command, arguments = args }, function() end, buf)
end

local function insert_at(buf, row, col, text)
  local lines = drafts.lines(text)
  vim.api.nvim_buf_set_text(buf, row, col, row, col, lines)
  local end_row = row + #lines - 1
  local end_col = (#lines == 1 and col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { end_row + 1, end_col })
  return end_row, end_col
end

--- Whether ghost text is shown in the current buffer.
function M.visible()
  return buf_state(vim.api.nvim_get_current_buf()).sug ~= nil
end

--- Insert the shown draft: `kind` is "all" (default), "line" or "word". What is left stays shown.
function M.accept(kind)
  local buf = vim.api.nvim_get_current_buf()
  local sug = buf_state(buf).sug
  if not sug then
    return false
  end
  local draft = sug.drafts[sug.index]
  local part = drafts.part(draft.text, kind or 'all')
  local row, col = insert_at(buf, sug.row, sug.col, part)
  local whole = part == draft.text
  notify_accept(buf, draft, not whole or draft.partial)
  if whole then
    clear(buf)
    return true
  end
  local left, index = drafts.advance(sug.drafts, sug.index, part)
  local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
  buf_state(buf).sug = {
    row = row,
    col = col,
    tick = vim.api.nvim_buf_get_changedtick(buf),
    drafts = left,
    index = index,
    line_before = line:sub(1, col),
  }
  render(buf)
  return true
end

--- Show the next (`step` = 1) or previous (-1) draft; without ghost text, ask for drafts.
function M.cycle(step)
  local buf = vim.api.nvim_get_current_buf()
  local sug = buf_state(buf).sug
  if not sug then
    M.request(true)
    return
  end
  sug.index = (sug.index - 1 + step) % #sug.drafts + 1
  render(buf)
end

--- Hide the ghost text (until the next edit).
function M.dismiss()
  local buf = vim.api.nvim_get_current_buf()
  cancel(buf)
  clear(buf)
end

-------------------------------------------------------------------------------- menu

--- Ask the server for its drafts as menu items and show them with complete().
function M.menu()
  local buf = vim.api.nvim_get_current_buf()
  local client = client_for(buf)
  if not client then
    return
  end
  -- The server answers one request per document at a time (a newer one supersedes the older): no
  -- ghost-text request may overtake the menu's.
  local st = buf_state(buf)
  if st.timer then
    st.timer:stop()
  end
  cancel(buf)
  clear(buf)
  local win = vim.api.nvim_get_current_win()
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = 1 }
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  c_request(client, 'textDocument/completion', params, function(err, result)
    if err or not in_insert() or vim.api.nvim_buf_get_changedtick(buf) ~= tick then
      return
    end
    local cursor = vim.api.nvim_win_get_cursor(0)
    local row, col = cursor[1] - 1, cursor[2]
    local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
    local entries, start = drafts.menu_items(result, line, row, col, client.offset_encoding)
    if #entries == 0 then
      return
    end
    menu_pending = {}
    local items = {}
    for _, e in ipairs(entries) do
      menu_pending[e.item.user_data] = { text = e.text, command = e.command }
      items[#items + 1] = e.item
    end
    clear(buf)
    vim.fn.complete(start, items)
  end, buf)
end

-- A menu draft was chosen: insert the lines after its first, and count the accept.
local function on_complete_done(buf)
  local item = vim.v.completed_item
  local entry = type(item) == 'table' and menu_pending[item.user_data]
  if not entry then
    return
  end
  menu_pending = {}
  local lines = drafts.lines(entry.text)
  if #lines > 1 then
    local cursor = vim.api.nvim_win_get_cursor(0)
    insert_at(buf, cursor[1] - 1, cursor[2], '\n' .. table.concat(lines, '\n', 2))
  end
  notify_accept(buf, entry, false)
end

--- An 'omnifunc' that lists the drafts (`:setlocal omnifunc=v:lua.require'superpie'.omnifunc`).
function M.omnifunc(findstart, _)
  if findstart == 1 then
    M.menu()
    return -3 -- the menu opens when the server answers
  end
  return {}
end

-------------------------------------------------------------------------------- server

--- What the server is doing: "off", "starting", "loading", "ready" or "error" (for a statusline).
function M.status()
  return progress.state, progress.message
end

local function on_progress(err, result, ctx, config)
  local value = result and result.value
  if type(value) == 'table' and value.kind then
    if value.kind == 'end' then
      local failed = (value.message or ''):match('cannot') ~= nil
      progress.state, progress.message = failed and 'error' or 'ready', value.message or ''
    else
      progress.state, progress.message = 'loading', value.message or progress.message
    end
  end
  local default = vim.lsp.handlers['$/progress']
  if default then
    return default(err, result, ctx, config)
  end
end

local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = { dynamicRegistration = false }
  return caps
end

--- Start (or reuse) the server for the buffer's project and attach the buffer.
function M.attach(buf)
  buf = buf or vim.api.nvim_get_current_buf()
  local name = vim.api.nvim_buf_get_name(buf)
  local root = find_root(name ~= '' and name or vim.fn.getcwd() .. '/x')
  local id = clients[root]
  if id and not vim.lsp.get_client_by_id(id) then
    id = nil
  end
  if not id then
    -- An empty Lua table would go out as a JSON array; the server wants an object.
    local options = next(M.config.init_options) and M.config.init_options or vim.empty_dict()
    local config = {
      name = 'superpie',
      cmd = M.config.cmd,
      root_dir = root,
      init_options = options,
      settings = { superpie = options },
      capabilities = capabilities(),
      handlers = { ['$/progress'] = on_progress },
      on_exit = function()
        clients[root] = nil
        progress.state = 'off'
      end,
    }
    progress.state = 'starting'
    if vim.lsp.start then
      id = vim.lsp.start(config, { bufnr = buf })
    else
      id = vim.lsp.start_client(config)
    end
    if not id then
      vim.notify('superpie: cannot start ' .. tostring(M.config.cmd[1]), vim.log.levels.ERROR)
      return nil
    end
    clients[root] = id
  end
  if not vim.lsp.buf_is_attached(buf, id) then
    vim.lsp.buf_attach_client(buf, id)
  end
  M.keymaps(buf)
  return id
end

--- The server's statistics (`superpie.stats`), shown or passed to `callback`.
function M.stats(callback)
  local buf = vim.api.nvim_get_current_buf()
  local client = client_for(buf)
  if not client then
    vim.notify('superpie: no server for this buffer', vim.log.levels.WARN)
    return
  end
  c_request(client, 'workspace/executeCommand', { command = 'superpie.stats' }, function(err, result)
    if callback then
      return callback(err, result)
    end
    if err then
      vim.notify('superpie.stats: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    local lat = (result.latency_ms or {}).inline or {}
    local model = result.model or {}
    local summary = string.format(
      'superpie: model %s (%s), inline p50 %s ms, p95 %s ms over %s requests',
      tostring(model.name),
      model.loaded and 'loaded' or 'not loaded',
      tostring(lat.p50),
      tostring(lat.p95),
      tostring(lat.count or 0)
    )
    vim.notify(summary .. '\n' .. vim.inspect(result), vim.log.levels.INFO)
  end, buf)
end

-------------------------------------------------------------------------------- set-up

local function map(buf, lhs, fn, desc)
  if lhs and lhs ~= '' then
    vim.keymap.set('i', lhs, fn, { buffer = buf, silent = true, desc = desc })
  end
end

--- Buffer-local insert-mode keys (from `config.keys`).
function M.keymaps(buf)
  local keys = M.config.keys
  local accept_key = keys.accept
  map(buf, accept_key, function()
    if not M.accept('all') then
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(accept_key, true, false, true), 'n', false)
    end
  end, 'superpie: accept the draft')
  map(buf, keys.accept_line, function()
    M.accept('line')
  end, 'superpie: accept a line')
  map(buf, keys.accept_word, function()
    M.accept('word')
  end, 'superpie: accept a word')
  map(buf, keys.next, function()
    M.cycle(1)
  end, 'superpie: next draft')
  map(buf, keys.prev, function()
    M.cycle(-1)
  end, 'superpie: previous draft')
  map(buf, keys.dismiss, M.dismiss, 'superpie: hide the draft')
  map(buf, keys.menu, M.menu, 'superpie: drafts in the menu')
end

--- Configure the plugin, start the server for matching buffers, and watch insert mode.
function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  if opts and opts.cmd then
    M.config.cmd = opts.cmd -- a list: replace, do not merge by index
  end
  vim.cmd('highlight default link SuperpieGhost Comment')
  local group = vim.api.nvim_create_augroup('superpie', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    callback = function(args)
      if client_for(args.buf) then
        on_edit(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd('InsertEnter', {
    group = group,
    callback = function(args)
      if client_for(args.buf) and M.config.ghost_text then
        schedule(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    callback = function(args)
      local st = bufs[args.buf]
      if st and st.timer then
        st.timer:stop()
      end
      cancel(args.buf)
      clear(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd('CompleteDone', {
    group = group,
    callback = function(args)
      on_complete_done(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd('BufWipeout', {
    group = group,
    callback = function(args)
      local st = bufs[args.buf]
      if st and st.timer then
        st.timer:stop()
        st.timer:close()
      end
      bufs[args.buf] = nil
    end,
  })
  vim.api.nvim_create_user_command('SuperpieStats', function()
    M.stats()
  end, { desc = 'superpie: show the server statistics' })
  vim.api.nvim_create_user_command('SuperpieToggle', function()
    M.config.ghost_text = not M.config.ghost_text
    M.dismiss()
    vim.notify('superpie: ghost text ' .. (M.config.ghost_text and 'on' or 'off'))
  end, { desc = 'superpie: ghost text on or off' })
  -- Buffers already open when setup runs.
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(M.config.filetypes, vim.bo[buf].filetype) then
      M.attach(buf)
    end
  end
end

--- Introspection for tests and statuslines: the shown drafts, the index, and the drawn ghost text.
function M.state(buf)
  buf = buf or vim.api.nvim_get_current_buf()
  local sug = buf_state(buf).sug
  local marks = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
  local ghost = {}
  for _, m in ipairs(marks) do
    local d = m[4]
    local first = {}
    for _, chunk in ipairs(d.virt_text or {}) do
      first[#first + 1] = chunk[1]
    end
    local text = table.concat(first)
    for _, vl in ipairs(d.virt_lines or {}) do
      local parts = {}
      for _, chunk in ipairs(vl) do
        parts[#parts + 1] = chunk[1]
      end
      text = text .. '\n' .. table.concat(parts)
    end
    ghost[#ghost + 1] = { row = m[2], col = m[3], text = text }
  end
  local texts = {}
  for _, d in ipairs(sug and sug.drafts or {}) do
    texts[#texts + 1] = d.text
  end
  return {
    drafts = texts,
    index = sug and sug.index or 0,
    ghost = ghost,
    status = progress.state,
    attached = client_for(buf) ~= nil,
  }
end

return M

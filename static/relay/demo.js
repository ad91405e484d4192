// The demo page (templates/demo.html): a static file, not an inline script, so the page runs
// under the relay's Content-Security-Policy (script-src 'self'). Its lobby comes from the page
// (the json_script element "lobby").
// The 3.x dialect of the relay protocol (docs/protocol.md): JSON in text frames.
const params = new URLSearchParams(location.search)
const lobby = JSON.parse(document.getElementById('lobby').textContent)
const me = params.get('name') || 'player-' + Math.random().toString(36).slice(2, 7)
const base = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host
const pipes = new Map() // peer id -> WebSocket (its pipe to us)
const board = document.getElementById('board')
const chat = document.getElementById('chat')
let position = { x: 20 + Math.random() * 60, y: 20 + Math.random() * 60 } // in % of the board
document.getElementById('me').textContent = me

function colour(name) {
  let hash = 0
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0
  return `hsl(${hash % 360} 65% 45%)`
}

function draw(name, x, y) {
  let dot = document.querySelector(`[data-player="${CSS.escape(name)}"]`)
  if (!dot) {
    dot = document.createElement('div')
    dot.className = 'player'
    dot.dataset.player = name
    dot.style.background = colour(name)
    dot.innerHTML = '<span></span>'
    dot.querySelector('span').textContent = name === me ? name + ' (you)' : name
    board.append(dot)
  }
  dot.style.left = x + '%'
  dot.style.top = y + '%'
}

function say(name, text) {
  const line = document.createElement('div')
  line.textContent = `${name}: ${text}`
  chat.append(line)
  chat.scrollTop = chat.scrollHeight
}

function showStatus() {
  const others = [...pipes.keys()]
  document.getElementById('status').innerHTML = ''
  document.getElementById('status').append(
    'You are ', Object.assign(document.createElement('b'), { textContent: me }), '. ',
    out ? 'Out of the lobby.'
      : others.length ? `Connected to ${others.join(', ')}.` : 'Waiting for another player...'
  )
}

// Why the relay took this tab out of the lobby (docs/protocol.md, Extended messages).
const LEFT_BECAUSE = {
  kicked: 'You were kicked out of the lobby.',
  banned: 'You were banned from the lobby.',
  closed: 'The lobby was closed.',
  private: 'The lobby was made private.',
  full: 'The lobby was made smaller than the players in it.',
  host_left: 'The host left the lobby.',
}
let out = false // taken out (or refused): no Join until the player asks again

function showNotice(text) {
  document.getElementById('notice-text').textContent = text
  document.getElementById('notice').hidden = false
}

function join() {
  // "ext": 1 asks for the relay's extended messages, so the tab learns why it is left out.
  control.send(JSON.stringify({ type: 'Join', documentIds: [lobby], nickname: me, ext: 1 }))
}

function broadcast(message) {
  const frame = JSON.stringify(message)
  for (const socket of pipes.values()) if (socket.readyState === WebSocket.OPEN) socket.send(frame)
}

function openPipe(other) {
  if (pipes.has(other)) return
  const path = ['connection', me, other, lobby].map(encodeURIComponent).join('/')
  const socket = new WebSocket(`${base}/${path}`)
  pipes.set(other, socket)
  socket.onopen = () => {
    socket.send(JSON.stringify({ kind: 'move', ...position }))
    showStatus()
  }
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data)
    if (message.kind === 'move') draw(other, message.x, message.y)
    if (message.kind === 'chat') say(other, message.text)
  }
  socket.onclose = () => {
    pipes.delete(other)
    document.querySelector(`[data-player="${CSS.escape(other)}"]`)?.remove()
    showStatus()
  }
}

let control = null
function connect() {
  control = new WebSocket(`${base}/introduction/${encodeURIComponent(me)}`)
  control.onopen = () => {
    if (!out) join()
    showStatus()
  }
  control.onmessage = (event) => {
    const message = JSON.parse(event.data)
    if (message.type === 'Introduction') openPipe(message.userName)
    if (message.documentId !== lobby) return
    if (message.type === 'Joined') {
      out = false
      document.getElementById('notice').hidden = true
      showStatus()
    }
    if (message.type === 'Left') {
      out = true
      showNotice(LEFT_BECAUSE[message.reason] || `You are out of the lobby (${message.reason}).`)
      showStatus()
    }
    if (message.type === 'Error') {
      out = true
      showNotice(`The relay refused to let you in: ${message.message}`)
      showStatus()
    }
  }
  control.onclose = () => setTimeout(connect, 1000) // the relay restarted: come back
}
setInterval(() => control?.readyState === WebSocket.OPEN && control.send('{"type":"Heartbeat"}'), 30000)

board.addEventListener('click', (event) => {
  const box = board.getBoundingClientRect()
  position = { x: (100 * (event.clientX - box.left)) / box.width, y: (100 * (event.clientY - box.top)) / box.height }
  draw(me, position.x, position.y)
  broadcast({ kind: 'move', ...position })
})
document.getElementById('say').addEventListener('submit', (event) => {
  event.preventDefault()
  const input = document.getElementById('line')
  if (!input.value) return
  say(me, input.value)
  broadcast({ kind: 'chat', text: input.value })
  input.value = ''
})
document.getElementById('rejoin').addEventListener('click', () => {
  document.getElementById('notice').hidden = true
  out = false
  if (control?.readyState === WebSocket.OPEN) join() // else the reconnect joins
})
draw(me, position.x, position.y)
connect()

// The landing page's live counts (templates/index.html): a static file, not an inline script,
// so the page runs under the relay's Content-Security-Policy (script-src 'self').
// Live counts: /api/stats every few seconds, while the page is visible.
async function refreshStats() {
  if (document.hidden) return
  try {
    const response = await fetch('/api/stats', { cache: 'no-store' })
    if (!response.ok) return
    const stats = await response.json()
    for (const element of document.querySelectorAll('[data-stat]')) {
      element.textContent = stats[element.dataset.stat]
    }
  } catch (error) {
    // The relay is restarting or unreachable: keep the last counts and try again.
  }
}
setInterval(refreshStats, 3000)

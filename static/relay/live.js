// A lobby's live view, refreshed in place: the admin's lobby page and the owners' lobby page
// both load this. Each element with data-live-url is replaced every two seconds by what that
// URL answers (the panel alone, lobbies/live_panel.html), except while the user is using one of
// its controls (choosing a ban's length, typing its reason), which a refresh would throw away.
(function () {
  for (const panel of document.querySelectorAll('[data-live-url]')) {
    async function refresh () {
      if (document.hidden || panel.contains(document.activeElement)) return
      try {
        const response = await fetch(panel.dataset.liveUrl, { credentials: 'same-origin', cache: 'no-store' })
        // Signed out meanwhile: the login page is not a panel; the next action asks to sign in.
        if (!response.ok || response.redirected) return
        const html = await response.text()
        // Asked again: the user may have reached for a button while the answer was on its way.
        if (!panel.contains(document.activeElement)) panel.innerHTML = html
      } catch (error) { /* the relay restarting: try again at the next tick */ }
    }
    setInterval(refresh, 2000)
  }
})()

// Forms that undo something for others (closing or deleting a lobby) ask first: their
// data-confirm is the question. A script of the page's own, not an inline handler.
document.addEventListener('submit', function (event) {
  const question = event.target.dataset && event.target.dataset.confirm
  if (question && !window.confirm(question)) event.preventDefault()
})

// The console's entry point: views by URL fragment (#cluster, #keys,
// #watch), login when the cluster asks for a user, log out.

import { onLoginNeeded, session, setSession } from './api.js';
import { ClusterView } from './cluster.js';
import { askLogin } from './dialogs.js';
import { KeysView } from './keys.js';
import { WatchView } from './watch.js';

const VIEWS = ['cluster', 'keys', 'watch'];

onLoginNeeded(askLogin);

const watch = new WatchView(document.getElementById('view-watch'));
const keys = new KeysView(document.getElementById('view-keys'), {
  onWatch: (key, prefix) => {
    location.hash = '#watch';
    watch.watch(key, prefix);
  },
});
const cluster = new ClusterView(document.getElementById('view-cluster'));

function showUser() {
  document.getElementById('who-name').textContent = session.user ? `user ${session.user}` : '';
  document.getElementById('logout').hidden = !session.token;
}

document.getElementById('logout').addEventListener('click', () => {
  setSession(null, null);
  showUser();
  location.reload();
});
document.addEventListener('kvd-login', showUser);

function route() {
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'cluster';
  for (const v of VIEWS) {
    document.getElementById('view-' + v).hidden = v !== view;
    document.getElementById('tab-' + v).classList.toggle('active', v === view);
  }
  if (view === 'keys') keys.show();
}

window.addEventListener('hashchange', route);
showUser();
route();

// For the browser tests and the curious: the views, from the devtools console.
window.kvd = { cluster, keys, watch };

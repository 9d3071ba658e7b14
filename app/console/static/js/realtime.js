// The Socket.IO connection manager: one Engine.IO connection (the Manager) carrying the
// namespaces, each authenticated with {token, last_event_id}. It reconnects by itself,
// re-sends the page's joins/subscriptions after every connect (rooms do not survive a
// reconnect), de-duplicates events by id (delivery is at-least-once), and tells the app to
// refetch over REST after a reconnect or a resync_required (replay is bounded).
import { freshAccessToken, refreshTokens, session } from './api.js';

const REFUSED_AUTH = /unauthorized|invalid_token/;

export class Realtime {
  constructor() {
    this.sockets = {};
    this.lastIds = {};
    this.seen = {};
    this.handlers = new Map(); // "ns event" -> Set(fn)
    this.wants = new Map(); // key -> {ns, event, data}
    this.stateListeners = new Set();
    this.resyncListeners = new Set();
    this.everConnected = {};
    this.manager = null;
  }

  start(namespaces) {
    this.stop();
    if (!window.io) throw new Error('socket.io client missing');
    this.manager = new window.io.Manager(window.location.origin, {
      reconnectionDelay: 500, reconnectionDelayMax: 5000, randomizationFactor: 0.3,
    });
    this.manager.on('reconnect_attempt', () => this.emitState());
    for (const ns of namespaces) this.open(ns);
  }

  open(ns) {
    const socket = this.manager.socket(ns, {
      // Called before every (re)connect: a token about to expire is refreshed first.
      auth: (cb) => {
        freshAccessToken().then((token) => {
          const auth = { token };
          if (this.lastIds[ns] !== undefined) auth.last_event_id = this.lastIds[ns];
          cb(auth);
        });
      },
    });
    this.sockets[ns] = socket;
    this.seen[ns] = new Set();
    let authRetries = 0;
    socket.on('connect', () => {
      authRetries = 0;
      for (const want of this.wants.values()) {
        if (want.ns === ns) socket.emit(want.event, want.data, (ack) => want.onAck && want.onAck(ack));
      }
      if (this.everConnected[ns]) this.resync(ns, 'reconnected');
      this.everConnected[ns] = true;
      this.emitState();
    });
    socket.on('disconnect', (reason) => {
      this.emitState();
      // The server ended this socket (e.g. a session that ended): try again after a pause;
      // a revoked token is then refused and the app signs out.
      if (reason === 'io server disconnect') setTimeout(() => this.manager && socket.connect(), 1000);
    });
    socket.on('connect_error', async (err) => {
      this.emitState();
      if (socket.active) return; // a transport error: the manager retries by itself
      // python-socketio sends a refusal's dict as the message text: match the code in it.
      const code = (err && err.data && err.data.code) || (err && err.message) || '';
      if (REFUSED_AUTH.test(code) && authRetries < 3) {
        authRetries += 1;
        try {
          await refreshTokens((session() || {}).access_token);
        } catch { return; } // signed out: the app reacts to the session change
        socket.connect();
      } else {
        setTimeout(() => this.manager && !socket.connected && socket.connect(), 3000);
      }
    });
    socket.onAny((name, envelope) => {
      if (envelope && typeof envelope.id === 'number') {
        const key = `${name}:${envelope.id}`;
        if (this.seen[ns].has(key)) return;
        this.seen[ns].add(key);
        if (this.seen[ns].size > 2000) this.seen[ns] = new Set([...this.seen[ns]].slice(-1000));
        this.lastIds[ns] = Math.max(this.lastIds[ns] || 0, envelope.id);
      }
      if (name === 'resync_required') {
        this.resync(ns, 'resync_required');
        return;
      }
      const set = this.handlers.get(`${ns} ${name}`);
      if (set) set.forEach((fn) => { try { fn(envelope || {}); } catch (e) { console.error(e); } });
    });
  }

  stop() {
    if (this.manager) {
      Object.values(this.sockets).forEach((s) => s.disconnect());
      this.manager = null;
    }
    this.sockets = {};
    this.everConnected = {};
    this.emitState();
  }

  // Listen to an event of a namespace; returns the function that stops listening.
  on(ns, event, fn) {
    const key = `${ns} ${event}`;
    if (!this.handlers.has(key)) this.handlers.set(key, new Set());
    this.handlers.get(key).add(fn);
    return () => this.handlers.get(key).delete(fn);
  }

  // Keep a join/subscription for as long as the page wants it (re-sent on every connect);
  // returns the function that undoes it.
  want(ns, event, data, { undo, onAck } = {}) {
    const key = `${ns} ${event} ${JSON.stringify(data)}`;
    const entry = { ns, event, data, onAck };
    this.wants.set(key, entry);
    const socket = this.sockets[ns];
    if (socket && socket.connected) socket.emit(event, data, (ack) => onAck && onAck(ack));
    return () => {
      if (this.wants.get(key) !== entry) return;
      this.wants.delete(key);
      const s = this.sockets[ns];
      if (undo && s && s.connected) s.emit(undo, data);
    };
  }

  call(ns, event, data) {
    const socket = this.sockets[ns];
    if (!socket || !socket.connected) return Promise.reject(new Error('offline'));
    return socket.timeout(10000).emitWithAck(event, data);
  }

  connected(ns = '/feed') {
    const socket = this.sockets[ns];
    return Boolean(socket && socket.connected);
  }

  onState(fn) { this.stateListeners.add(fn); return () => this.stateListeners.delete(fn); }

  // Call fn each time the namespace goes from not connected to connected (the first
  // connect included): state that the connect itself changes, like my own presence, may
  // have changed before this socket could hear about it.
  onConnected(ns, fn) {
    let was = this.connected(ns);
    return this.onState(() => {
      const now = this.connected(ns);
      if (now && !was) fn();
      was = now;
    });
  }
  emitState() { this.stateListeners.forEach((fn) => fn()); }
  onResync(fn) { this.resyncListeners.add(fn); return () => this.resyncListeners.delete(fn); }

  resync(ns, why) { this.resyncListeners.forEach((fn) => fn(ns, why)); }
}

export const rt = new Realtime();

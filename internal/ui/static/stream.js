// A resuming client of the sidecar's websocket protocol (docs/protocol.md).
// It holds, per subscription, the objects of the subscription and the last
// resourceVersion received, reconnects with backoff and resumes from there.

const SUBPROTOCOL = "nodemirror.fleet.v1";
const BEARER_PREFIX = "base64url.bearer.authorization.k8s.io.";
const CLOSE_RESUME = 4000;
const CLOSE_UNAUTHORIZED = 4001;

function base64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export class Stream {
  // onChange(subID, type, object) for every object event; onState(state,
  // detail) when the connection state changes: "connecting", "live",
  // "reconnecting" (detail: seconds), "offline"; onError(subID, status).
  constructor({ url, token, onChange, onState, onError, onReset, onUnauthorized }) {
    Object.assign(this, { url, token, onChange, onState, onError, onReset, onUnauthorized });
    this.subs = new Map(); // id → {message, resourceVersion, synced}
    this.attempt = 0;
    this.closed = false;
    addEventListener("online", () => this.connectSoon(0));
    addEventListener("offline", () => { if (!this.closed) this.onState("offline"); });
  }

  // subscribe adds a subscription, sent now if connected and on every
  // (re)connect. An optional one (the operations panel) does not hold the
  // connection's "live" state back, so a refusal leaves the rest usable.
  subscribe(id, message, { optional = false } = {}) {
    this.subs.set(id, { message, resourceVersion: "", synced: false, optional });
    this.send({ type: "subscribe", id, ...message });
  }

  // close ends the stream for good: no reconnect follows.
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  connect() {
    if (this.closed) return;
    this.onState(this.attempt === 0 ? "connecting" : "reconnecting", 0);
    const protocols = [SUBPROTOCOL];
    if (this.token) protocols.unshift(BEARER_PREFIX + base64url(this.token));
    const ws = new WebSocket(this.url, protocols);
    this.ws = ws;
    ws.onopen = () => {
      for (const [id, s] of this.subs) {
        s.synced = false;
        if (!s.resourceVersion) this.onReset(id);
        this.resubscribe(id, s);
      }
    };
    ws.onmessage = (m) => this.receive(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (this.ws !== ws || this.closed) return;
      if (e.code === CLOSE_UNAUTHORIZED) {
        // The hub no longer accepts the token: retrying cannot help.
        this.closed = true;
        this.onUnauthorized();
        return;
      }
      // 4000: we fell behind; resume at once. Anything else: back off.
      this.connectSoon(e.code === CLOSE_RESUME ? 0 : this.backoff());
    };
  }

  resubscribe(id, s) {
    const resume = s.resourceVersion ? { resourceVersion: s.resourceVersion } : {};
    this.send({ type: "subscribe", id, ...s.message, ...resume });
  }

  backoff() {
    const seconds = Math.min(30, 2 ** Math.min(this.attempt, 5));
    return seconds * (0.5 + Math.random() / 2);
  }

  connectSoon(seconds) {
    if (this.closed) return;
    clearTimeout(this.timer);
    if (!navigator.onLine) { this.onState("offline"); return; }
    this.attempt++;
    this.onState("reconnecting", Math.ceil(seconds));
    this.timer = setTimeout(() => this.connect(), seconds * 1000);
  }

  receive(env) {
    const s = this.subs.get(env.subscription);
    const ev = env.event;
    if (ev.type === "ERROR") {
      if (s && ev.object.code === 410) {
        // The sidecar no longer holds our history: a fresh state follows.
        s.resourceVersion = "";
        this.onReset(env.subscription);
        return;
      }
      if (s && ev.object.code === 503) {
        // The sidecar has no state to give yet: ask again shortly. (It
        // normally refuses the upgrade itself, and the reconnect backs off.)
        const ws = this.ws;
        setTimeout(() => { if (this.ws === ws) this.resubscribe(env.subscription, s); }, 1000);
        return;
      }
      this.onError(env.subscription, ev.object);
      return;
    }
    if (!s) return;
    if (env.resourceVersion) s.resourceVersion = env.resourceVersion;
    if (ev.type === "BOOKMARK") {
      const end = ev.object.metadata?.annotations?.["k8s.io/initial-events-end"] === "true";
      if (end && !s.synced) {
        s.synced = true;
        if ([...this.subs.values()].every((x) => x.synced || x.optional)) {
          this.attempt = 0;
          this.onState("live");
        }
      }
      return;
    }
    this.onChange(env.subscription, ev.type, ev.object);
  }
}

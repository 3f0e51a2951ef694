// The gateway side of a web dialer: xsigate's login API and XSI through the login session.
// Everything a dialer must do is here, each in one place:
// - every request carries the session cookie (`credentials: 'include'`): the cookie is
//   HttpOnly, so the page never sees it, and SameSite=Strict, so the dialer's origin must be
//   same-site with the gateway (here both are on 127.0.0.1);
// - every state-changing request carries the CSRF token from the login answer;
// - XSI-Events channel commands carry the XSP pin that the channel's answer named.

export const XSI_ACTIONS = '/com.broadsoft.xsi-actions/v2.0';
export const XSI_EVENTS = '/com.broadsoft.xsi-events/v2.0';
export const XSI_ASYNC_EVENTS = '/com.broadsoft.async/com.broadsoft.xsi-events/v2.0';
export const XSP_PIN = 'x-xsigate-xsp';
const CSRF_TOKEN = 'x-csrf-token';
const XSI_NS = 'http://schema.broadsoft.com/xsi';

/** A failed gateway call: the HTTP status and xsigate's error code (or the XSI summary). */
export class GatewayError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}${message ? `: ${message}` : ''}`);
    this.status = status;
    this.code = code;
  }
}

async function failure(response) {
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('json')) {
    const body = await response.json().catch(() => null);
    return new GatewayError(response.status, body?.error?.code ?? 'error', body?.error?.message);
  }
  const text = await response.text().catch(() => '');
  const summary = text.match(/<summary>([^<]*)<\/summary>/)?.[1];
  return new GatewayError(response.status, 'xsi_error', summary);
}

export class Gateway {
  constructor(url) {
    this.url = url.replace(/\/$/, '');
    this.csrf = null;
  }

  async #fetch(path, { method = 'GET', headers = {}, body } = {}) {
    const sent = { ...headers };
    if (method !== 'GET' && this.csrf) sent[CSRF_TOKEN] = this.csrf;
    const response = await fetch(this.url + path, { method, headers: sent, body, credentials: 'include' });
    if (!response.ok) throw await failure(response);
    return response;
  }

  async #json(path, method, value) {
    const response = await this.#fetch(path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: value === undefined ? undefined : JSON.stringify(value),
    });
    return response.status === 204 ? null : response.json();
  }

  /** The login options open to what the user typed: a user id, an e-mail address, a number. */
  options(query) {
    return this.#json('/api/access/services/ztp', 'POST', { query });
  }

  /**
   * Logs in with a method. The answer is a session (`csrf_token`, `unique_id`, `reports`), or
   * `{choose: [...]}` when the lookup found several accounts (send one's `user_id` in `params`).
   */
  async logIn(method, user, password, params) {
    const answer = await this.#json(`/api/access/services/idp/${encodeURIComponent(method)}`, 'POST', {
      user,
      password,
      ...(params ? { params } : {}),
    });
    if (answer.csrf_token) this.csrf = answer.csrf_token;
    return answer;
  }

  /**
   * Starts a single sign-on (an option whose `sign_in` is `redirect`): answers the identity
   * provider's URL, where the page then goes. The answer's flow cookie ties the flow to this
   * browser; the user comes back to the provider's return URL, the dialer's page.
   */
  async startSignOn(method, user) {
    const answer = await this.#json(`/api/access/services/idp/${encodeURIComponent(method)}`, 'POST', { user });
    return answer.redirect;
  }

  /**
   * Back from a single sign-on: the login's answer, which the gateway hands over once (so no
   * token ever rides in the return URL); `null` when this page load is not the end of one.
   */
  async finishSignOn() {
    let response;
    try {
      response = await this.#fetch('/api/access/services/session/login', { method: 'POST' });
    } catch (error) {
      if (error instanceof GatewayError && [401, 404].includes(error.status)) return null;
      throw error;
    }
    const answer = await response.json();
    if (answer.csrf_token) this.csrf = answer.csrf_token;
    return answer;
  }

  /** The session the cookie names, with the BroadWorks userId the XSI paths need. */
  session() {
    return this.#json('/api/access/services/session', 'GET');
  }

  async logOut() {
    try {
      await this.#json('/api/access/services/logout', 'POST', {});
    } finally {
      this.csrf = null;
    }
  }

  /** An XSI-Actions request through the session; answers the XML document. */
  async xsi(method, path, xml, headers = {}) {
    const response = await this.#fetch(XSI_ACTIONS + path, {
      method,
      headers: xml ? { 'content-type': 'application/xml', ...headers } : headers,
      body: xml,
    });
    const text = await response.text();
    return text ? new DOMParser().parseFromString(text, 'application/xml') : null;
  }

  /** Sets a service's `active` flag (Do Not Disturb, Call Forwarding Always, …). */
  setService(userId, service, fields) {
    const children = Object.entries(fields)
      .map(([name, value]) => `<${name}>${escapeXml(String(value))}</${name}>`)
      .join('');
    const xml = `<?xml version="1.0" encoding="UTF-8"?><${service} xmlns="${XSI_NS}">${children}</${service}>`;
    return this.xsi('PUT', `/user/${encodeURIComponent(userId)}/services/${service}`, xml);
  }

  /** Places a call from the user's own device (click to dial). */
  dial(userId, address) {
    return this.xsi('POST', `/user/${encodeURIComponent(userId)}/calls/new?address=${encodeURIComponent(address)}`);
  }

  /**
   * Opens an XSI-Events channel through the session. The gateway answers which XSP holds the
   * stream in `X-Xsigate-Xsp` (exposed to the page by CORS); every later command on the channel
   * sends it back, so that it reaches that XSP. Answers the channel, whose `stream` yields each
   * XSI document that arrives on it.
   */
  async openChannel(applicationId, expires = 3600) {
    const setId = `${applicationId}-${crypto.randomUUID()}`;
    const xml = `<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="${XSI_NS}">` +
      `<channelSetId>${setId}</channelSetId><priority>1</priority><weight>100</weight>` +
      `<expires>${expires}</expires><applicationId>${escapeXml(applicationId)}</applicationId></Channel>`;
    const controller = new AbortController();
    const sent = { 'content-type': 'application/xml', [CSRF_TOKEN]: this.csrf };
    const response = await fetch(`${this.url}${XSI_ASYNC_EVENTS}/channel`, {
      method: 'POST', headers: sent, body: xml, credentials: 'include', signal: controller.signal,
    });
    if (!response.ok) throw await failure(response);
    const channel = new Channel(this, response.headers.get(XSP_PIN), response.body, controller);
    await channel.ready;
    return channel;
  }

  async channelCommand(channel, method, path, xml) {
    const headers = xml ? { 'content-type': 'application/xml' } : {};
    if (channel.pin) headers[XSP_PIN] = channel.pin;
    await this.#fetch(XSI_EVENTS + path, { method, headers, body: xml });
  }
}

/** An open XSI-Events channel: its id, the XSP pin, and the documents of its stream. */
class Channel {
  constructor(gateway, pin, body, controller) {
    this.gateway = gateway;
    this.pin = pin;
    this.id = null;
    this.documents = [];
    this.listeners = new Set();
    this.controller = controller;
    this.ready = new Promise((resolve, reject) => { this.opened = resolve; this.broken = reject; });
    this.closed = this.#read(body.pipeThrough(new TextDecoderStream()));
  }

  async #read(text) {
    let buffered = '';
    try {
      for await (const chunk of text) {
        buffered += chunk;
        // The stream is a sequence of XML documents, each starting with its declaration.
        const parts = buffered.split(/(?=<\?xml)/);
        buffered = parts.pop();
        for (const part of parts) this.#document(part);
        if (/<\/(Channel|ChannelHeartBeat|Event|ChannelTerminatedEvent)>\s*$/.test(buffered)) {
          this.#document(buffered);
          buffered = '';
        }
      }
    } catch (error) {
      if (error.name !== 'AbortError') this.broken(error);
    }
    this.broken(new Error('the channel closed before it opened'));
  }

  #document(xml) {
    const document = new DOMParser().parseFromString(xml, 'application/xml');
    const root = document.documentElement;
    if (!this.id && root.localName === 'Channel') {
      this.id = root.getElementsByTagNameNS(XSI_NS, 'channelId')[0]?.textContent ?? null;
      this.opened(this);
    }
    this.documents.push(root.localName);
    for (const listener of this.listeners) listener(root);
  }

  heartbeat() {
    return this.gateway.channelCommand(this, 'PUT', `/channel/${encodeURIComponent(this.id)}/heartbeat`);
  }

  async close() {
    try {
      await this.gateway.channelCommand(this, 'DELETE', `/channel/${encodeURIComponent(this.id)}`);
    } finally {
      this.controller.abort();
    }
  }
}

export function escapeXml(text) {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The text of the first element named `name` (in the XSI namespace) of a document. */
export function xsiText(document, name) {
  return document?.getElementsByTagNameNS(XSI_NS, name)[0]?.textContent ?? null;
}

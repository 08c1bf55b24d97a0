// One MQTT round trip from the browser, through MQTT.js over WebSocket: connect, subscribe
// to a topic, publish to it, and receive the message back. The page judges nothing: it
// reports what it saw (CONNACK, SUBACK, publish callback, the received message) and its own
// log to the test by POST /result, which asserts. Every step is bounded by the page timeout.
'use strict';

const params = new URLSearchParams(location.search);
const cfg = {
  url: params.get('ws'),
  protocolVersion: Number(params.get('proto')),
  qos: Number(params.get('qos')),
  topic: params.get('topic'),
  payload: params.get('payload'),
  clientId: params.get('id'),
  timeoutMs: Number(params.get('timeout_ms') || 8000),
};
const logLines = [];
// steps: what each stage saw; received: the command of every packet from the broker.
const report = { config: cfg, log: logLines, steps: {}, received: [] };
let client = null;
let done = false;

function log(text) {
  const line = ((performance.now() / 1000).toFixed(3)) + ' ' + text;
  logLines.push(line);
  document.getElementById('log').textContent += line + '\n';
  console.log('roundtrip: ' + text); // also in Chromium's stderr (--enable-logging)
}

// The first outcome counts: 'received', or a failure with its error.
function finish(outcome, error) {
  if (done) return;
  done = true;
  report.outcome = outcome;
  if (error) report.error = error;
  log('finished: ' + outcome);
  document.getElementById('status').textContent = outcome;
  if (client) client.end(true);
  fetch('/result', { method: 'POST', body: JSON.stringify(report) })
    .catch((e) => console.error('roundtrip: POST /result failed: ' + e));
}

window.addEventListener('error', (e) => {
  finish('error', 'page error: ' + e.message);
});
setTimeout(() => {
  finish('timeout', 'no round trip within ' + cfg.timeoutMs + ' ms');
}, cfg.timeoutMs);

function onConnect(connack) {
  report.steps.connack = { returnCode: connack.returnCode, reasonCode: connack.reasonCode,
    sessionPresent: connack.sessionPresent };
  log('connected: ' + JSON.stringify(report.steps.connack));
  client.subscribe(cfg.topic, { qos: cfg.qos }, (err, granted) => {
    if (err) {
      finish('error', 'subscribe: ' + err.message);
      return;
    }
    report.steps.suback = granted.map((g) => ({ topic: g.topic, qos: g.qos }));
    log('subscribed: ' + JSON.stringify(report.steps.suback));
    const opts = { qos: cfg.qos };
    if (cfg.protocolVersion === 5) {
      // MQTT 5 properties that the broker must forward unaltered [MQTT-3.3.2-17]
      // [MQTT-3.3.2-20]
      opts.properties = { userProperties: { origin: 'browser' }, contentType: 'text/plain' };
    }
    client.publish(cfg.topic, cfg.payload, opts, (perr, pkt) => {
      report.steps.published = { error: perr ? perr.message : null,
        reasonCode: pkt && pkt.reasonCode !== undefined ? pkt.reasonCode : null };
      log('publish callback: ' + JSON.stringify(report.steps.published));
      maybeFinish();
    });
  });
}

function onMessage(topic, payload, packet) {
  report.steps.message = {
    topic,
    payload: new TextDecoder().decode(payload),
    qos: packet.qos,
    messageId: packet.messageId === undefined ? null : packet.messageId,
    properties: packet.properties || null,
  };
  log('message: ' + JSON.stringify(report.steps.message));
  maybeFinish();
}

// With QoS 1 the publish callback (after PUBACK) and the message may come in either order:
// the round trip is complete when both have.
function maybeFinish() {
  if (report.steps.published && report.steps.message) finish('received');
}

if (typeof mqtt === 'undefined' || typeof mqtt.connect !== 'function') {
  finish('error', 'mqtt.min.js did not load (no global mqtt.connect)');
} else {
  log('connecting to ' + cfg.url + ' as MQTT ' + cfg.protocolVersion);
  client = mqtt.connect(cfg.url, {
    protocolVersion: cfg.protocolVersion,
    clientId: cfg.clientId,
    clean: true,
    reconnectPeriod: 0, // one attempt: a failure is reported, not retried
    connectTimeout: 5000,
  });
  client.on('connect', onConnect);
  client.on('message', onMessage);
  client.on('packetreceive', (p) => report.received.push(p.cmd));
  client.on('error', (e) => {
    finish('error', 'client error: ' + e.message);
  });
  client.on('close', () => {
    log('connection closed');
    finish('closed', 'connection closed before the round trip completed');
  });
}

// A graphql-ws (npm) client for tests/test_subscriptions.py: subscribes to sessionEvents after a
// cursor, prints each event id as a line of JSON, and exits after `count` events (or 30 s).
// Usage: NODE_PATH=<dir with graphql-ws and ws> node graphql_ws_client.cjs URL TOKEN AFTER COUNT
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");

const [url, token, after, count] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
});
const ids = [];
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 30000);
client.subscribe(
  { query: "subscription($after: ID) { sessionEvents(after: $after) { id kind } }", variables: { after } },
  {
    next: (result) => {
      if (result.errors) {
        console.log(JSON.stringify({ errors: result.errors }));
        process.exit(1);
      }
      ids.push(Number(result.data.sessionEvents.id));
      if (ids.length >= Number(count)) {
        console.log(JSON.stringify({ ids }));
        clearTimeout(timer);
        client.dispose();
        process.exit(0);
      }
    },
    error: (err) => {
      console.log(JSON.stringify({ error: String(err && (err.reason || err.message || err)) }));
      process.exit(1);
    },
    complete: () => {},
  },
);

'use strict';
// The app under test for idle-overhead, rss and info-latency: a hello-world HTTP server on
// loopback. Started as-is ("without agent") and with `-r ispy/register` ("with agent");
// nothing else differs. Prints `PORT <n>` once listening.
const http = require('node:http');

const body = Buffer.from('hello world\n');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 30000;
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));

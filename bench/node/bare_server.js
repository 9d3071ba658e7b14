// A bare Node socket.io 4 server, the peer of bench/realtime.py's bare python-socketio one:
// /episodes accepts everyone, "join" enters a room, POST /emit emits to a room.
// Its defaults are kept: permessage-deflate is off since socket.io v3.
const http = require("http");
const { Server } = require("socket.io");

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/emit") {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      const b = JSON.parse(body);
      io.of("/episodes").to(b.room).emit(b.event, b.data);
      res.setHeader("Content-Type", "application/json");
      res.end("{}");
    });
    return;
  }
  res.end("ok");
});
const io = new Server(server, { cors: { origin: "*" } });
io.of("/episodes").on("connection", (socket) => {
  socket.on("join", (data, ack) => {
    socket.join("episode:" + data.episode_id);
    if (typeof ack === "function") ack({ ok: true, viewers: [] });
  });
});
server.listen(Number(process.argv[2]), "127.0.0.1");

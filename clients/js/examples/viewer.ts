// Type-checked by test/package.test.js against the installed tarball (tsc --noEmit).
import { connect, quicOffer, type ActionFrame, type Room, type Transport } from 'liveroom-client';

async function main(): Promise<void> {
  const client = connect('ws://127.0.0.1:8080/ws', {
    codec: 'json',
    transport: 'auto',
    webtransportUrl: () => quicOffer('http://127.0.0.1:8080/'),
    getToken: async () => {
      const res = await fetch('http://127.0.0.1:8080/v1/dev/token', { method: 'POST', body: '{"user":"ts"}' });
      return ((await res.json()) as { token: string }).token;
    },
  });
  client.on('peer', async (m) => { console.log(m.from.name, m.body); });
  client.on('disconnected', ({ code }) => console.log('closed', code));
  client.on('redirect', ({ url, reason }) => console.log('redirected to', url, reason));
  const room: Room = await client.join('demo');
  const over: Transport | null = client.transport;
  console.log(over, client.datagrams);
  room.on('state', ({ sections }) => {
    for (const s of sections) console.log(s, room.state.get<{ likes: number }>(s)?.likes, room.state.versions[s]);
  });
  room.on('action', (a: ActionFrame) => console.log(a.kind, a.from.name, a.body));
  room.on('recovered', ({ recovered, reason }) => console.log(recovered, reason));
  room.on('left', ({ reason }) => console.log('left:', reason));
  const sent: boolean = room.send('comment', { text: 'hi' }, { id: 'c-1' });
  const ack = await client.sendPeer('bob', { text: 'psst' });
  console.log(sent, ack.seq, room.online, room.presence?.size, room.history?.length);
  client.close();
}

void main();

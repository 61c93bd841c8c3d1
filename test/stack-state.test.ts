// `process stack` on an idle app must say idle even when its capture lands in the event
// loop's own timer processing (where the agent's 100 ms heartbeat runs): that is the loop
// turning, not the app running. Anything of the app on the stack is running.

import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { DIST } from './helpers';
import { onlyTimerBookkeeping } from '../dist/src/agent/inspector.js';

const frame = (file: string, functionName = 'f') => ({ functionName, file, line: 1, column: 1 });
const HEARTBEAT = path.join(DIST, 'src', 'agent', 'heartbeat.js');

describe('idle or running', () => {
  it('only the loop\'s timer processing, with or without the heartbeat in it, is bookkeeping', () => {
    expect(onlyTimerBookkeeping([frame('node:internal/timers', 'listOnTimeout'), frame('node:internal/timers', 'processTimers')])).toBe(true);
    expect(onlyTimerBookkeeping([frame('node:internal/priority_queue', 'peek'), frame('node:internal/timers', 'processTimers')])).toBe(true);
    expect(onlyTimerBookkeeping([frame(HEARTBEAT, 'beat'), frame('node:internal/timers', 'listOnTimeout')])).toBe(true);
  });

  it('an app frame anywhere, another internal, or nothing at all is not', () => {
    expect(onlyTimerBookkeeping([frame('/srv/app/server.js', 'tick'), frame('node:internal/timers', 'listOnTimeout')])).toBe(false);
    expect(onlyTimerBookkeeping([frame('node:internal/streams/readable'), frame('node:internal/timers')])).toBe(false);
    expect(onlyTimerBookkeeping([])).toBe(false);
  });
});

// Whether a process id names a live process, the one answer for IPAM's lock owners and
// reservations and for the lab's daemons.

type Kill = (pid: number, signal: number) => unknown;

/**
 * Signal 0 checks without signalling. EPERM means the process exists but belongs to someone
 * else, so it is alive; ESRCH means it is gone. 0 and negative ids name process groups, not a
 * process, so they are never alive here.
 */
export function pidAlive(pid: number, kill: Kill = process.kill.bind(process)): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

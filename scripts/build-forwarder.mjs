// Compiles the userspace mode's forwarder (src/proxy/userspace/forwarder/main.ts) into one
// executable with Bun (npm's @oven/bun-linux-x64): the data path runs on Bun for bun:ffi
// (splice, recvmmsg, sendmmsg, epoll straight from libc), the rest of knet on Node. Without
// the two --no-compile-autoload flags the executable would read .env and bunfig.toml from
// whatever directory it is started in.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const BUN = `${root}node_modules/@oven/bun-linux-x64/bin/bun`;

/** Builds the forwarder at outfile; false (with the reason on stderr) when Bun is not installed. */
export function compileForwarder(outfile) {
  if (!existsSync(BUN)) {
    process.stderr.write(`build: ${BUN} is missing (npm ci installs it): no userspace forwarder\n`);
    return false;
  }
  execFileSync(BUN, ['build', '--compile', '--no-compile-autoload-dotenv', '--no-compile-autoload-bunfig', '--minify',
    `${root}src/proxy/userspace/forwarder/main.ts`, '--outfile', outfile], { stdio: ['ignore', 'ignore', 'inherit'] });
  return true;
}

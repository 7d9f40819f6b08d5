import { readFile } from 'node:fs/promises';

/**
 * Names a PEM file of CA certificates to trust besides Node's own, as
 * NODE_EXTRA_CA_CERTS does. Node parses NODE_EXTRA_CA_CERTS at start-up
 * (~70 ms of CPU for a system bundle), so `cairn mount` hands it to the daemon
 * it spawns under this name instead, and the certificates are read only when
 * an https registry is first used.
 */
export const EXTRA_CA_CERTS_ENV = 'CAIRN_EXTRA_CA_CERTS';

let extraCa: Promise<string[] | undefined> | undefined;

/** The trusted CAs with the CAIRN_EXTRA_CA_CERTS ones, or undefined (Node's defaults) when it is unset or unreadable. */
export function caWithExtra(): Promise<string[] | undefined> {
  extraCa ??= (async () => {
    const file = process.env[EXTRA_CA_CERTS_ENV];
    if (!file) return undefined;
    const [{ rootCertificates }, pem] = await Promise.all([
      import('node:tls'),
      readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
        // What Node does with an unreadable NODE_EXTRA_CA_CERTS: warn, keep the defaults.
        process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${err.message}`);
        return '';
      }),
    ]);
    const extra = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    return extra.length > 0 ? [...rootCertificates, ...extra] : undefined;
  })();
  return extraCa;
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import ipaddr from 'ipaddr.js';
import { seededRandom } from '../dlp/samples.js';
import { CidrTable, cidrContains, parseCidr, type Cidr, type IpAddress } from './ip.js';

/** Addresses that share leading bits with each other often, so that CIDRs of every length do match. */
function randomAddress(random: () => number, v6: boolean): IpAddress {
  const pick = (limit: number) => Math.floor(random() * limit);
  if (!v6) return new ipaddr.IPv4([10, pick(2) * 128 + pick(2), pick(4), pick(256)]);
  return new ipaddr.IPv6([0x2001, 0xdb8, pick(2) * 0x8000 + pick(3), 0, 0, 0, pick(2), pick(65536)]);
}

describe('CidrTable', () => {
  it('finds exactly the CIDRs that contain an address, for every prefix length, IPv4 and IPv6', () => {
    const random = seededRandom(42);
    const table = new CidrTable<number>();
    const cidrs: Cidr[] = [];
    for (let i = 0; i < 300; i++) {
      const v6 = i % 2 === 1;
      const address = randomAddress(random, v6);
      const prefix = Math.floor(random() * ((v6 ? 128 : 32) + 1));
      const cidr = parseCidr(`${address.toString()}/${prefix}`);
      assert.ok(cidr, `${address.toString()}/${prefix} parses`);
      cidrs.push(cidr);
      table.add(cidr, i);
    }
    for (let i = 0; i < 2000; i++) {
      const address = randomAddress(random, i % 2 === 1);
      const found: number[] = [];
      table.lookup(address, (value) => found.push(value));
      const expected = cidrs.flatMap((cidr, index) => (cidrContains(cidr, address) ? [index] : []));
      assert.deepEqual(found.sort((a, b) => a - b), expected, `lookup of ${address.toString()}`);
    }
  });

  it('finds nothing of the other family', () => {
    const table = new CidrTable<string>();
    table.add(parseCidr('0.0.0.0/0')!, 'all v4');
    const lookup = (text: string): string[] => {
      const found: string[] = [];
      table.lookup(ipaddr.parse(text), (value) => found.push(value));
      return found;
    };
    assert.deepEqual(lookup('::1'), []);
    assert.deepEqual(lookup('192.0.2.1'), ['all v4']);
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyAddress } from './addresses.js';

describe('default-blocked address ranges', () => {
  for (const [address, range] of [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['169.254.169.254', 'linkLocal'],
    ['fd00:ec2::254', 'uniqueLocal'],
    ['fe80::1', 'linkLocal'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['fc00::1', 'uniqueLocal'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['::ffff:169.254.169.254', 'linkLocal'],
    ['::ffff:a9fe:a9fe', 'linkLocal'],
    ['::ffff:10.0.0.1', 'private'],
    ['::127.0.0.1', 'ipv4Compatible'],
    ['::a9fe:a9fe', 'ipv4Compatible'],
    ['64:ff9b::a9fe:a9fe', 'rfc6052'],
    ['64:ff9b:1::a00:1', 'rfc6052'],
    ['2002:a9fe:a9fe::1', '6to4'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'teredo'],
    ['2001:db8::1', 'reserved'],
  ] as const) {
    it(`blocks ${address} by default (${range})`, () => {
      assert.equal(classifyAddress(address)?.blockedRange, range);
    });
  }

  it('passes global unicast addresses', () => {
    assert.equal(classifyAddress('93.184.216.34')?.blockedRange, undefined);
    assert.equal(classifyAddress('2606:2800:220:1:248:1893:25c8:1946')?.blockedRange, undefined);
  });

  it('dials an IPv4-mapped address as IPv4, so what is checked is what is dialled', () => {
    assert.deepEqual(classifyAddress('::ffff:93.184.216.34'), { address: '93.184.216.34', family: 4, blockedRange: undefined });
  });

  it('refuses text that is not an IP address rather than guessing', () => {
    for (const text of ['0x7f.1', '2130706433', 'localhost', '127.1', 'fe80::1%eth0', '']) assert.equal(classifyAddress(text), undefined, text);
  });
});

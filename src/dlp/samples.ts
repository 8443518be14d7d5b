/**
 * Fake but format-valid secrets, one generator per rule, for the quality tests and the benchmark. Checksums
 * are computed, so a sample passes every check a real token would. They are random and worthless.
 */
import { crc32 } from 'node:zlib';
import { base62Checksum } from './validators.js';

export type Random = () => number;

/** A small seeded generator (mulberry32): the same seed gives the same corpus. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const UPPER_NUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const HEX = '0123456789abcdef';
const B64URL = ALNUM + '_-';
const B64 = ALNUM + '+/';
const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const DIGITS = '0123456789';

export function pick(random: Random, alphabet: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(random() * alphabet.length)];
  return out;
}

/** A token with a GitHub/npm-style CRC32 suffix: prefix + 30 random base62 + 6 checksum characters. */
export function checksummedToken(prefix: string, random: Random): string {
  const body = pick(random, ALNUM, 30);
  return prefix + body + base62Checksum(crc32(body));
}

function luhnComplete(partial: string): string {
  for (let d = 0; d < 10; d++) {
    const candidate = partial + d;
    let sum = 0;
    let double = false;
    for (let i = candidate.length - 1; i >= 0; i--) {
      let v = candidate.charCodeAt(i) - 48;
      if (double) {
        v *= 2;
        if (v > 9) v -= 9;
      }
      sum += v;
      double = !double;
    }
    if (sum % 10 === 0) return candidate;
  }
  throw new Error('unreachable');
}

function jwt(random: Random): string {
  const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
  const payload = Buffer.from(JSON.stringify({ sub: pick(random, ALNUM, 12), iat: 1700000000 + Math.floor(random() * 1e6) })).toString('base64url');
  return `${header}.${payload}.${pick(random, B64URL, 43)}`;
}

function pemBody(random: Random, lines: number): string {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) out.push(pick(random, B64, 64));
  return out.join('\n');
}

/** A password with letters, digits and a symbol (entropy well above the generic gate). */
function password(random: Random): string {
  return pick(random, LETTERS, 6) + pick(random, DIGITS, 3) + '!' + pick(random, LETTERS, 4);
}

export const SAMPLES: Record<string, (random: Random) => string> = {
  'aws-access-key-id': (r) => 'AKIA' + pick(r, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16),
  'aws-secret-access-key': (r) => `aws_secret_access_key = ${pick(r, B64, 40)}`,
  'github-pat': (r) => checksummedToken('ghp_', r),
  'github-oauth-token': (r) => checksummedToken('gho_', r),
  'github-user-token': (r) => checksummedToken('ghu_', r),
  'github-app-token': (r) => checksummedToken('ghs_', r),
  'github-refresh-token': (r) => checksummedToken('ghr_', r),
  'github-fine-grained-pat': (r) => `github_pat_${pick(r, ALNUM, 22)}_${pick(r, ALNUM, 59)}`,
  'gitlab-pat': (r) => 'glpat-' + pick(r, B64URL, 20),
  'gitlab-runner-token': (r) => 'glrt-' + pick(r, B64URL, 20),
  'gitlab-deploy-token': (r) => 'gldt-' + pick(r, B64URL, 20),
  'gitlab-pipeline-trigger-token': (r) => 'glptt-' + pick(r, HEX, 40),
  'gitlab-runner-registration-token': (r) => 'GR1348941' + pick(r, B64URL, 20),
  'slack-bot-token': (r) => `xoxb-${pick(r, DIGITS, 12)}-${pick(r, DIGITS, 13)}-${pick(r, ALNUM, 24)}`,
  'slack-user-token': (r) => `xoxp-${pick(r, DIGITS, 12)}-${pick(r, DIGITS, 12)}-${pick(r, DIGITS, 13)}-${pick(r, HEX, 32)}`,
  'slack-app-token': (r) => `xapp-1-A${pick(r, UPPER_NUM, 10)}-${pick(r, DIGITS, 13)}-${pick(r, HEX, 64)}`,
  'slack-legacy-token': (r) => `xoxs-${pick(r, DIGITS, 11)}-${pick(r, DIGITS, 12)}-${pick(r, ALNUM, 24)}`,
  'slack-webhook-url': (r) => `https://hooks.slack.com/services/T${pick(r, UPPER_NUM, 10)}/B${pick(r, UPPER_NUM, 10)}/${pick(r, ALNUM, 24)}`,
  'stripe-secret-key': (r) => 'sk_live_' + pick(r, ALNUM, 99),
  'stripe-restricted-key': (r) => 'rk_live_' + pick(r, ALNUM, 99),
  'stripe-test-key': (r) => 'sk_test_' + pick(r, ALNUM, 99),
  'stripe-webhook-secret': (r) => 'whsec_' + pick(r, ALNUM, 32),
  'openai-api-key': (r) => `sk-proj-${pick(r, B64URL, 74)}T3BlbkFJ${pick(r, B64URL, 74)}`,
  'anthropic-api-key': (r) => `sk-ant-api03-${pick(r, B64URL, 93)}AA`,
  'anthropic-admin-key': (r) => `sk-ant-admin01-${pick(r, B64URL, 93)}AA`,
  'huggingface-token': (r) => 'hf_' + pick(r, LETTERS, 34),
  'huggingface-org-token': (r) => 'api_org_' + pick(r, LETTERS, 34),
  'groq-api-key': (r) => 'gsk_' + pick(r, ALNUM, 52),
  'xai-api-key': (r) => 'xai-' + pick(r, ALNUM, 80),
  'replicate-api-token': (r) => 'r8_' + pick(r, ALNUM, 37),
  'google-api-key': (r) => 'AIza' + pick(r, B64URL, 35),
  'google-oauth-client-secret': (r) => 'GOCSPX-' + pick(r, B64URL, 28),
  'google-oauth-access-token': (r) => 'ya29.' + pick(r, B64URL, 150),
  'gcp-service-account-key': (r) =>
    JSON.stringify(
      {
        type: 'service_account',
        project_id: 'acme-prod',
        private_key_id: pick(r, HEX, 40),
        client_email: 'deployer@acme-prod.iam.gserviceaccount.com',
      },
      null,
      2,
    ),
  'azure-storage-account-key': (r) =>
    `DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey=${pick(r, B64, 86)}==;EndpointSuffix=core.windows.net`,
  'azure-shared-access-key': (r) =>
    `Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=${pick(r, B64, 43)}=`,
  'azure-ad-client-secret': (r) => `${pick(r, ALNUM, 3)}${pick(r, DIGITS, 1)}Q~${pick(r, ALNUM + '_~.-', 34)}`,
  'azure-sas-token': (r) =>
    `https://acme.blob.core.windows.net/backups?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2026-01-01T00:00:00Z&sig=${pick(r, ALNUM, 40)}%2B${pick(r, ALNUM, 8)}%3D`,
  'npm-token': (r) => checksummedToken('npm_', r),
  'pypi-token': (r) => 'pypi-AgEIcHlwaS5vcmc' + pick(r, B64URL, 150),
  'dockerhub-token': (r) => 'dckr_pat_' + pick(r, B64URL, 27),
  'twilio-api-key': (r) => 'SK' + pick(r, HEX, 32),
  'sendgrid-api-key': (r) => `SG.${pick(r, B64URL, 22)}.${pick(r, B64URL, 43)}`,
  'mailgun-api-key': (r) => 'key-' + pick(r, HEX, 32),
  'mailchimp-api-key': (r) => `${pick(r, HEX, 32)}-us${1 + Math.floor(r() * 20)}`,
  'discord-webhook-url': (r) => `https://discord.com/api/webhooks/${pick(r, DIGITS, 18)}/${pick(r, B64URL, 68)}`,
  'shopify-token': (r) => 'shpat_' + pick(r, HEX, 32),
  'digitalocean-token': (r) => 'dop_v1_' + pick(r, HEX, 64),
  'linear-api-key': (r) => 'lin_api_' + pick(r, ALNUM, 40),
  'postman-api-key': (r) => `PMAK-${pick(r, HEX, 24)}-${pick(r, HEX, 34)}`,
  'databricks-token': (r) => 'dapi' + pick(r, HEX, 32),
  'hashicorp-vault-token': (r) => 'hvs.' + pick(r, B64URL, 95),
  'terraform-cloud-token': (r) => `${pick(r, ALNUM, 14)}.atlasv1.${pick(r, B64URL, 67)}`,
  'atlassian-api-token': (r) => 'ATATT3' + pick(r, B64URL, 186),
  'grafana-service-account-token': (r) => `glsa_${pick(r, ALNUM, 32)}_${pick(r, HEX, 8)}`,
  'newrelic-user-key': (r) => 'NRAK-' + pick(r, UPPER_NUM, 27),
  'sentry-org-token': (r) => 'sntrys_eyJ' + pick(r, B64URL, 120),
  'supabase-token': (r) => 'sbp_' + pick(r, HEX, 40),
  'pulumi-token': (r) => 'pul-' + pick(r, HEX, 40),
  'doppler-token': (r) => 'dp.pt.' + pick(r, ALNUM, 43),
  'age-secret-key': (r) => 'AGE-SECRET-KEY-1' + pick(r, 'QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L', 58),
  jwt: (r) => jwt(r),
  'private-key': (r) => `-----BEGIN RSA PRIVATE KEY-----\n${pemBody(r, 12)}\n-----END RSA PRIVATE KEY-----`,
  'openssh-private-key': (r) => `-----BEGIN OPENSSH PRIVATE KEY-----\n${pemBody(r, 6)}\n-----END OPENSSH PRIVATE KEY-----`,
  'pgp-private-key': (r) => `-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n${pemBody(r, 8)}\n=${pick(r, B64, 4)}\n-----END PGP PRIVATE KEY BLOCK-----`,
  'database-url-password': (r) => `postgres://app:${password(r)}@db.internal.acme.io:5432/orders`,
  'url-basic-auth': (r) => `https://deploy:${password(r)}@artifacts.acme.io/releases/`,
  'http-basic-auth': (r) => `Authorization: Basic ${Buffer.from(`deploy:${password(r)}`).toString('base64')}`,
  'bearer-token': (r) => `Authorization: Bearer ${pick(r, B64URL, 40)}`,
  'payment-card-number': (r) => luhnComplete('4' + pick(r, DIGITS, 14)),
  'generic-password': (r) => `DB_PASSWORD=${password(r)}`,
  'generic-api-key': (r) => `api_key: "${pick(r, ALNUM, 32)}"`,
};

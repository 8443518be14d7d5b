/**
 * The provider rules, written from the public token formats. A rule names literal keywords (the prefilter:
 * every match contains one, `before` characters from its start) and a pattern that is run anchored at the
 * match start only when a keyword was seen. Patterns are compiled once, in scanner.ts.
 *
 * Severity says how bad a leak would be; a failed checksum lowers a finding to `medium` with `low`
 * confidence (it has the shape of a token but is probably a fake), and a published documentation example
 * (AWS's `…EXAMPLE` keys, test card numbers) is `low`.
 */
import { cardNumber, CONFIRMED, jwtShape, plausibleValue, prefixedCrc32Token, shannonEntropy, REJECT, type Verdict } from './validators.js';

export type Severity = 'high' | 'medium' | 'low';
export type Confidence = 'high' | 'medium' | 'low';

export interface Rule {
  id: string;
  title: string;
  severity: Severity;
  /** How sure a match of this rule is, when its check (if any) confirms it. */
  confidence: Confidence;
  /** Case-sensitive literals; every match contains one of them, `before` characters after its start. */
  keywords: readonly string[];
  /** A match starts exactly this many characters before its keyword. */
  before?: number;
  /** Matched anchored at the match start (compiled with the sticky flag, plus `flags`). */
  pattern: string;
  flags?: string;
  /** Capture groups that can hold the secret (the first that took part wins); default: the whole match. */
  secretGroups?: readonly number[];
  /** The longest match, from its start: how far a streaming scan may need to look ahead. */
  maxLength: number;
  /** The character before the match must not be a letter or digit (default true). */
  boundary?: boolean;
  /**
   * More characters that may not come right before a match: those of the token's own alphabet, for formats
   * whose keyword could repeat inside one long run (`-eyJ-eyJ…`) and make every repeat a long attempt.
   */
  boundaryChars?: string;
  /** Second-stage check of the secret; `match` is the whole match (for context such as a URL's host). */
  check?: (secret: string, match: string) => Verdict;
  /** A public, constant prefix of the format that previews may show (`ghp_`). */
  prefix?: string;
}

/** Right boundaries: the token may not run on into more token characters. */
const END62 = '(?![A-Za-z0-9])';
const END64 = '(?![A-Za-z0-9_-])';

/** `word` in lower case, UPPER CASE and Capitalised: the spellings of a name people actually use. */
function cases(...words: string[]): string[] {
  const out = new Set<string>();
  for (const word of words) {
    out.add(word.toLowerCase());
    out.add(word.toUpperCase());
    out.add(word[0]!.toUpperCase() + word.slice(1).toLowerCase());
    out.add(word);
  }
  return [...out];
}

/** A quoted or bare value after `name = `, `name: `, `name := ` or `"name": `. */
const ASSIGNED_VALUE = `\\\\?["']?\\s{0,4}(?::=|=>|=|:)\\s{0,4}(?:\\\\?"([^"\\\\\\s]{N,200})\\\\?"|'([^'\\\\\\s]{N,200})'|([^\\s"'\`,;&()[\\]{}<>]{N,200}))`;
function assignedValue(minLength: number): string {
  return ASSIGNED_VALUE.replaceAll('N', String(minLength));
}

/** Base64 of `user:password` with printable text and a plausible password. */
function basicCredentials(encoded: string): Verdict {
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 1 || !PRINTABLE.test(decoded)) return REJECT;
  return plausibleValue(decoded.slice(colon + 1), 1.5);
}
const PRINTABLE = /^[\x20-\x7e]+$/;

const entropyAtLeast = (bits: number) => (secret: string): Verdict => (shannonEntropy(secret) >= bits ? CONFIRMED : REJECT);

function github(id: string, prefix: string, title: string): Rule {
  return {
    id,
    title,
    severity: 'high',
    confidence: 'high',
    keywords: [prefix],
    pattern: `${prefix}[A-Za-z0-9]{36}${END62}`,
    maxLength: prefix.length + 36,
    check: prefixedCrc32Token,
    prefix,
  };
}

/** A token that is a constant prefix followed by characters of one class. */
function prefixed(
  id: string,
  title: string,
  prefix: string,
  body: string,
  maxBody: number,
  extra: Partial<Rule> = {},
): Rule {
  return {
    id,
    title,
    severity: 'high',
    confidence: 'high',
    keywords: [prefix],
    pattern: `${escape(prefix)}${body}`,
    maxLength: prefix.length + maxBody,
    prefix,
    ...extra,
  };
}

function escape(literal: string): string {
  return literal.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

const DB_SCHEMES = ['postgres', 'postgresql', 'mysql', 'mariadb', 'mongodb', 'mongodb+srv', 'redis', 'rediss', 'amqp', 'amqps', 'mssql', 'sqlserver', 'clickhouse', 'cockroachdb'];
const URL_SCHEMES = ['https', 'http', 'ftp', 'ftps', 'sftp', 'ssh', 'git+https', 'git+ssh', 'smtp', 'smtps', 'ldap', 'ldaps'];

/** A password in the user-info part of a URL; placeholders such as `:password@` or `:${PASS}@` do not count. */
const urlPassword = (secret: string, match: string): Verdict =>
  DOCUMENTATION_HOST.test(match) ? REJECT : plausibleValue(decodeURIComponentSafe(secret), 1.5);
/** RFC 2606 names: URLs in documentation, never a real credential's destination. */
const DOCUMENTATION_HOST = /@(?:[A-Za-z0-9-]+\.)*(?:example\.(?:com|org|net)|[A-Za-z0-9-]+\.(?:example|test|invalid))(?![A-Za-z0-9.-])/;

function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

const USERINFO = `://[^\\s:/@"'<>]{1,128}:([^\\s/@"'<>]{1,256})@[A-Za-z0-9._\\[\\]-]+`;

export const RULES: readonly Rule[] = [
  // AWS
  {
    id: 'aws-access-key-id',
    title: 'AWS access key id',
    severity: 'high',
    confidence: 'high',
    keywords: ['AKIA', 'ASIA', 'ABIA', 'ACCA'],
    pattern: `(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}${END62}`,
    maxLength: 20,
  },
  {
    id: 'aws-secret-access-key',
    title: 'AWS secret access key',
    severity: 'high',
    confidence: 'high',
    keywords: [...cases('aws_secret', 'aws-secret', 'secret_access_key'), 'SecretAccessKey', 'secretAccessKey', 'awsSecret', 'AwsSecret'],
    pattern: `[A-Za-z_-]{0,32}?["']?\\s{0,4}(?::=|=>|=|:)\\s{0,4}["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])`,
    secretGroups: [1],
    maxLength: 90,
    check: entropyAtLeast(3.5),
  },
  // GitHub
  github('github-pat', 'ghp_', 'GitHub personal access token (classic)'),
  github('github-oauth-token', 'gho_', 'GitHub OAuth access token'),
  github('github-user-token', 'ghu_', 'GitHub App user-to-server token'),
  github('github-app-token', 'ghs_', 'GitHub App installation token'),
  github('github-refresh-token', 'ghr_', 'GitHub refresh token'),
  prefixed('github-fine-grained-pat', 'GitHub fine-grained personal access token', 'github_pat_', `[A-Za-z0-9]{22}_[A-Za-z0-9]{59}${END62}`, 82),
  // GitLab
  prefixed('gitlab-pat', 'GitLab personal access token', 'glpat-', `[A-Za-z0-9_-]{20,64}(?:\\.[0-9a-z]{2}\\.[0-9a-z]{7,9})?${END64}`, 80),
  prefixed('gitlab-runner-token', 'GitLab runner authentication token', 'glrt-', `[A-Za-z0-9_-]{20,64}(?:\\.[0-9a-z]{2}\\.[0-9a-z]{7,9})?${END64}`, 80),
  prefixed('gitlab-deploy-token', 'GitLab deploy token', 'gldt-', `[A-Za-z0-9_-]{20,64}${END64}`, 64),
  prefixed('gitlab-pipeline-trigger-token', 'GitLab pipeline trigger token', 'glptt-', `[0-9a-f]{40}${END62}`, 40),
  prefixed('gitlab-runner-registration-token', 'GitLab runner registration token', 'GR1348941', `[A-Za-z0-9_-]{20}${END64}`, 20),
  // Slack
  prefixed('slack-bot-token', 'Slack bot token', 'xoxb-', `[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24,34}${END62}`, 62),
  prefixed('slack-user-token', 'Slack user token', 'xoxp-', `[0-9]{10,13}-[0-9]{10,13}-[0-9]{10,13}-[a-f0-9]{32}${END62}`, 75),
  prefixed('slack-app-token', 'Slack app-level token', 'xapp-', `[0-9]-[A-Z0-9]{9,11}-[0-9]{10,13}-[a-f0-9]{64}${END62}`, 95),
  {
    id: 'slack-legacy-token',
    title: 'Slack legacy or workspace token',
    severity: 'high',
    confidence: 'medium',
    keywords: ['xoxa-', 'xoxr-', 'xoxs-', 'xoxo-'],
    pattern: `xox[aros]-[0-9A-Za-z-]{20,200}${END62}`,
    maxLength: 205,
    prefix: 'xox',
  },
  prefixed('slack-webhook-url', 'Slack incoming webhook URL', 'hooks.slack.com/services/', `T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}${END62}`, 52, { boundary: false }),
  // Stripe
  prefixed('stripe-secret-key', 'Stripe live secret key', 'sk_live_', `[A-Za-z0-9]{24,247}${END62}`, 247),
  prefixed('stripe-restricted-key', 'Stripe live restricted key', 'rk_live_', `[A-Za-z0-9]{24,247}${END62}`, 247),
  prefixed('stripe-test-key', 'Stripe test secret key', 'sk_test_', `[A-Za-z0-9]{24,247}${END62}`, 247, { severity: 'medium' }),
  prefixed('stripe-webhook-secret', 'Stripe webhook signing secret', 'whsec_', `[A-Za-z0-9+/=]{32,100}${END62}`, 100),
  // AI providers
  {
    id: 'openai-api-key',
    title: 'OpenAI API key',
    severity: 'high',
    confidence: 'high',
    keywords: ['sk-'],
    pattern: `sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,160}T3BlbkFJ[A-Za-z0-9_-]{20,160}${END64}`,
    maxLength: 350,
    prefix: 'sk-',
    boundaryChars: '_-',
  },
  prefixed('anthropic-api-key', 'Anthropic API key', 'sk-ant-api03-', `[A-Za-z0-9_-]{93}AA${END64}`, 95),
  prefixed('anthropic-admin-key', 'Anthropic admin key', 'sk-ant-admin01-', `[A-Za-z0-9_-]{93}AA${END64}`, 95),
  prefixed('huggingface-token', 'Hugging Face access token', 'hf_', `[A-Za-z]{34}${END62}`, 34),
  prefixed('huggingface-org-token', 'Hugging Face organisation API token', 'api_org_', `[A-Za-z]{34}${END62}`, 34),
  prefixed('groq-api-key', 'Groq API key', 'gsk_', `[A-Za-z0-9]{52}${END62}`, 52),
  prefixed('xai-api-key', 'xAI API key', 'xai-', `[A-Za-z0-9]{80}${END62}`, 80),
  prefixed('replicate-api-token', 'Replicate API token', 'r8_', `[A-Za-z0-9]{37}${END62}`, 37),
  // Google
  prefixed('google-api-key', 'Google API key', 'AIza', `[0-9A-Za-z_-]{35}${END64}`, 35),
  prefixed('google-oauth-client-secret', 'Google OAuth client secret', 'GOCSPX-', `[A-Za-z0-9_-]{28}${END64}`, 28),
  prefixed('google-oauth-access-token', 'Google OAuth access token', 'ya29.', `[A-Za-z0-9_-]{30,2048}${END64}`, 2048),
  {
    id: 'gcp-service-account-key',
    title: 'Google Cloud service account key (JSON)',
    severity: 'high',
    confidence: 'high',
    // Also when the JSON file sits, escaped, inside another JSON string.
    keywords: ['private_key_id'],
    pattern: `private_key_id\\\\?"\\s{0,4}:\\s{0,4}\\\\?"([a-f0-9]{40})\\\\?"`,
    secretGroups: [1],
    maxLength: 70,
    boundary: false,
  },
  // Azure
  {
    id: 'azure-storage-account-key',
    title: 'Azure storage account key',
    severity: 'high',
    confidence: 'high',
    keywords: ['AccountKey='],
    pattern: `AccountKey=([A-Za-z0-9+/]{86}==)`,
    secretGroups: [1],
    maxLength: 99,
    boundary: false,
  },
  {
    id: 'azure-shared-access-key',
    title: 'Azure Service Bus / Event Hubs shared access key',
    severity: 'high',
    confidence: 'high',
    keywords: ['SharedAccessKey='],
    pattern: `SharedAccessKey=([A-Za-z0-9+/]{42,43}=)`,
    secretGroups: [1],
    maxLength: 60,
    boundary: false,
  },
  {
    id: 'azure-ad-client-secret',
    title: 'Azure AD (Entra ID) client secret',
    severity: 'high',
    confidence: 'medium',
    keywords: ['Q~'],
    before: 4,
    pattern: `[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])`,
    maxLength: 40,
  },
  {
    id: 'azure-sas-token',
    title: 'Azure shared access signature',
    severity: 'high',
    confidence: 'medium',
    keywords: ['sig='],
    pattern: `sig=((?:[A-Za-z0-9+/]|%2[BbFf]){40,120}(?:=|%3[Dd]){0,2})(?![A-Za-z0-9%])`,
    secretGroups: [1],
    maxLength: 200,
    boundary: false,
    check: entropyAtLeast(4),
  },
  // Package registries
  {
    ...prefixed('npm-token', 'npm access token', 'npm_', `[A-Za-z0-9]{36}${END62}`, 36),
    check: prefixedCrc32Token,
  },
  prefixed('pypi-token', 'PyPI upload token', 'pypi-AgEIcHlwaS5vcmc', `[A-Za-z0-9_-]{50,300}${END64}`, 300, { prefix: 'pypi-' }),
  {
    id: 'dockerhub-token',
    title: 'Docker Hub access token',
    severity: 'high',
    confidence: 'high',
    keywords: ['dckr_pat_', 'dckr_oat_'],
    pattern: `dckr_(?:pat|oat)_[A-Za-z0-9_-]{27,40}${END64}`,
    maxLength: 49,
    prefix: 'dckr_',
  },
  // Messaging and e-mail
  prefixed('twilio-api-key', 'Twilio API key', 'SK', `[0-9a-f]{32}${END62}`, 32),
  prefixed('sendgrid-api-key', 'SendGrid API key', 'SG.', `[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}${END64}`, 66),
  prefixed('mailgun-api-key', 'Mailgun API key', 'key-', `[0-9a-f]{32}${END62}`, 32, { confidence: 'medium' }),
  {
    id: 'mailchimp-api-key',
    title: 'Mailchimp API key',
    severity: 'high',
    confidence: 'medium',
    keywords: ['-us'],
    before: 32,
    pattern: `[0-9a-f]{32}-us[0-9]{1,2}${END62}`,
    maxLength: 37,
  },
  {
    id: 'discord-webhook-url',
    title: 'Discord webhook URL',
    severity: 'high',
    confidence: 'high',
    keywords: ['discord.com/api/webhooks/', 'discordapp.com/api/webhooks/'],
    pattern: `discord(?:app)?\\.com/api/webhooks/[0-9]{17,20}/([A-Za-z0-9_-]{60,80})${END64}`,
    secretGroups: [1],
    maxLength: 130,
    boundary: false,
  },
  // Developer platforms
  prefixed('shopify-token', 'Shopify access token or shared secret', 'shp', `(?:at|ss|ca|pa)_[a-fA-F0-9]{32}${END62}`, 35, {
    keywords: ['shpat_', 'shpss_', 'shpca_', 'shppa_'],
  }),
  prefixed('digitalocean-token', 'DigitalOcean token', 'do', `[opr]_v1_[a-f0-9]{64}${END62}`, 70, {
    keywords: ['dop_v1_', 'doo_v1_', 'dor_v1_'],
  }),
  prefixed('linear-api-key', 'Linear API key', 'lin_api_', `[A-Za-z0-9]{40}${END62}`, 40),
  prefixed('postman-api-key', 'Postman API key', 'PMAK-', `[a-f0-9]{24}-[a-f0-9]{34}${END62}`, 59),
  prefixed('databricks-token', 'Databricks personal access token', 'dapi', `[a-f0-9]{32}(?:-[0-9])?${END62}`, 34),
  prefixed('hashicorp-vault-token', 'HashiCorp Vault token', 'hvs.', `[A-Za-z0-9_-]{90,120}${END64}`, 120),
  {
    id: 'terraform-cloud-token',
    title: 'Terraform Cloud / HCP Terraform API token',
    severity: 'high',
    confidence: 'high',
    keywords: ['.atlasv1.'],
    before: 14,
    pattern: `[A-Za-z0-9]{14}\\.atlasv1\\.[A-Za-z0-9_-]{60,70}${END64}`,
    maxLength: 93,
  },
  prefixed('atlassian-api-token', 'Atlassian API token', 'ATATT3', `[A-Za-z0-9_=-]{180,200}${END64}`, 200),
  prefixed('grafana-service-account-token', 'Grafana service account token', 'glsa_', `[A-Za-z0-9]{32}_[a-f0-9]{8}${END62}`, 41),
  prefixed('newrelic-user-key', 'New Relic user API key', 'NRAK-', `[A-Z0-9]{27}${END62}`, 27),
  prefixed('sentry-org-token', 'Sentry organisation auth token', 'sntrys_', `eyJ[A-Za-z0-9+/=_-]{60,400}${END64}`, 400, { boundaryChars: '_-' }),
  prefixed('supabase-token', 'Supabase access token', 'sbp_', `[a-f0-9]{40}${END62}`, 40),
  prefixed('pulumi-token', 'Pulumi access token', 'pul-', `[a-f0-9]{40}${END62}`, 40),
  prefixed('doppler-token', 'Doppler token', 'dp.', `(?:pt|st|ct|sa|scim|audit)\\.[A-Za-z0-9]{40,44}${END62}`, 54, {
    keywords: ['dp.pt.', 'dp.st.', 'dp.ct.', 'dp.sa.', 'dp.scim.', 'dp.audit.'],
  }),
  prefixed('age-secret-key', 'age secret key', 'AGE-SECRET-KEY-1', `[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}${END62}`, 58),
  // Structured credentials
  {
    id: 'jwt',
    title: 'JSON Web Token',
    severity: 'high',
    confidence: 'high',
    keywords: ['eyJ'],
    pattern: `eyJ[A-Za-z0-9_-]{8,2000}\\.eyJ[A-Za-z0-9_-]{8,8000}\\.[A-Za-z0-9_-]{16,1000}${END64}`,
    maxLength: 11_000,
    check: jwtShape,
    prefix: 'eyJ',
    boundaryChars: '_-',
  },
  {
    id: 'private-key',
    title: 'Private key (PEM)',
    severity: 'high',
    confidence: 'high',
    keywords: ['-----BEGIN RSA PRIVATE KEY', '-----BEGIN EC PRIVATE KEY', '-----BEGIN DSA PRIVATE KEY', '-----BEGIN PRIVATE KEY', '-----BEGIN ENCRYPTED PRIVATE KEY'],
    // Newlines may be real or JSON-escaped (`\n`) when the key sits in a JSON string.
    pattern: `-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----(?:\\\\[nr]|[\\s\\r\\n])+(?:[A-Za-z0-9+/=:,]|-(?!----)|\\\\[nr]|\\s){40,16000}?-----END \\1-----`,
    maxLength: 16_100,
    boundary: false,
    prefix: '-----BEGIN ',
  },
  {
    id: 'openssh-private-key',
    title: 'OpenSSH private key',
    severity: 'high',
    confidence: 'high',
    keywords: ['-----BEGIN OPENSSH PRIVATE KEY'],
    pattern: `-----BEGIN OPENSSH PRIVATE KEY-----(?:[A-Za-z0-9+/=]|\\\\[nr]|\\s){40,16000}?-----END OPENSSH PRIVATE KEY-----`,
    maxLength: 16_100,
    boundary: false,
    prefix: '-----BEGIN ',
  },
  {
    id: 'pgp-private-key',
    title: 'PGP private key block',
    severity: 'high',
    confidence: 'high',
    keywords: ['-----BEGIN PGP PRIVATE KEY BLOCK'],
    pattern: `-----BEGIN PGP PRIVATE KEY BLOCK-----(?:[A-Za-z0-9+/=:. ]|-(?!----)|\\\\[nr]|\\s){40,32000}?-----END PGP PRIVATE KEY BLOCK-----`,
    maxLength: 32_100,
    boundary: false,
    prefix: '-----BEGIN ',
  },
  {
    id: 'database-url-password',
    title: 'Database URL with a password',
    severity: 'high',
    confidence: 'high',
    keywords: DB_SCHEMES.map((scheme) => `${scheme}://`),
    pattern: `(?:${DB_SCHEMES.map(escape).join('|')})${USERINFO}`,
    secretGroups: [1],
    maxLength: 420,
    check: urlPassword,
  },
  {
    id: 'url-basic-auth',
    title: 'Password in a URL (basic auth)',
    severity: 'high',
    confidence: 'medium',
    keywords: URL_SCHEMES.map((scheme) => `${scheme}://`),
    pattern: `(?:${URL_SCHEMES.map(escape).join('|')})${USERINFO}`,
    secretGroups: [1],
    maxLength: 420,
    check: urlPassword,
  },
  {
    id: 'bearer-token',
    title: 'Bearer token in an Authorization header',
    severity: 'medium',
    confidence: 'medium',
    keywords: ['Bearer ', 'bearer '],
    pattern: `[Bb]earer\\s{1,4}([A-Za-z0-9._~+/-]{20,2000}=*)(?![A-Za-z0-9._~+/=-])`,
    secretGroups: [1],
    maxLength: 2010,
    check: entropyAtLeast(3.5),
  },
  {
    id: 'http-basic-auth',
    title: 'Credentials in an HTTP Basic Authorization header',
    severity: 'high',
    confidence: 'high',
    keywords: ['Basic ', 'basic '],
    pattern: `[Bb]asic\\s{1,4}([A-Za-z0-9+/]{8,1000}={0,2})(?![A-Za-z0-9+/=])`,
    secretGroups: [1],
    maxLength: 1010,
    check: basicCredentials,
  },
  // Payment cards are found without a keyword: the scanner tracks runs of digits itself.
  {
    id: 'payment-card-number',
    title: 'Payment card number',
    severity: 'high',
    confidence: 'medium',
    keywords: [],
    pattern: `[0-9](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z])`,
    maxLength: 40,
    check: cardNumber,
  },
  // Generic assignments, gated by entropy.
  {
    id: 'generic-password',
    title: 'Password assigned in text',
    severity: 'medium',
    confidence: 'medium',
    keywords: cases('password', 'passwd', 'pwd', 'passphrase'),
    pattern: `(?:password|passwd|pwd|passphrase)[A-Za-z0-9_.-]{0,24}?${assignedValue(8)}`,
    flags: 'i',
    secretGroups: [1, 2, 3],
    maxLength: 270,
    boundary: false,
    check: (value) => plausibleValue(value, 2.8),
  },
  {
    id: 'generic-api-key',
    title: 'Secret, token or API key assigned in text',
    severity: 'medium',
    confidence: 'medium',
    keywords: [
      ...cases('secret', 'token', 'api_key', 'apikey', 'api-key', 'access_key', 'auth_key', 'private_key'),
      'apiKey', 'ApiKey', 'accessKey', 'AccessKey', 'privateKey', 'PrivateKey',
    ],
    pattern: `(?:secret|token|api[_-]?key|access[_-]?key|auth[_-]?key|private[_-]?key)[A-Za-z0-9_.-]{0,24}?${assignedValue(16)}`,
    flags: 'i',
    secretGroups: [1, 2, 3],
    maxLength: 270,
    boundary: false,
    check: (value) => plausibleValue(value, 3.5),
  },
];

export const CARD_RULE_ID = 'payment-card-number';

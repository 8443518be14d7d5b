/**
 * The configuration `gatehouse up` writes on first run: a working starting point a person can read and
 * edit. It is a real policy, validated like any other.
 */
export const EXAMPLE_CONFIG = `# Gatehouse node configuration, created by "gatehouse up".
# Edit it while the node runs: it reloads on save, and keeps the old policy if the new one is invalid.
# Schema for editors: gatehouse config schema > gatehouse.schema.json
version: 1

node:
  api:
    listen: 127.0.0.1:7400

agents:
  dev:
    teams: [developers]

policy:
  network:
    - id: github
      allow: [github.com, api.github.com, "*.githubusercontent.com"]
      ports: [443]
    - id: package-registries
      allow: [registry.npmjs.org, pypi.org, files.pythonhosted.org]
      ports: [443]
    - id: paste-sites
      deny: ["**.pastebin.com", "**.paste.ee"]
    - id: cloud-metadata
      deny: [169.254.169.254, "fd00:ec2::254"]

  filesystem:
    - id: workspace
      allow: { paths: ["./"], access: rw }
    - id: system-read
      allow: { paths: [/usr, /lib, /etc, /bin, /sbin] }
    - id: credentials-on-disk
      deny: { paths: ["~/.ssh", "~/.aws", "~/.config/gcloud", "~/.kube", "~/.docker", "~/.netrc", "~/.git-credentials"] }

  credentials:
    - id: github-token
      secret: github-token
      env: GITHUB_TOKEN
      hosts: [api.github.com]
      header: "Authorization: Bearer {secret}"

  mcp:
    - id: read-only-tools
      allow: { tools: ["*"], annotations: { readOnlyHint: true } }
    - id: no-destructive
      deny: { tools: ["*"], annotations: { destructiveHint: true } }

  dlp:
    action: block
`;

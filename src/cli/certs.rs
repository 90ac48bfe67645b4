//! `pullguard certs`: a CA and a serving certificate for the webhook's Service, so no OpenSSL recipe is
//! needed. Writes `ca.crt`, `tls.crt`, `tls.key` and prints the caBundle.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, default_value = "pullguard")]
    pub service: String,
    /// The webhook's namespace.
    #[arg(long, default_value = "pullguard")]
    pub namespace: String,
    /// Where to write ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Another DNS name or IP address for the serving certificate (repeatable), e.g. for a URL-based webhook.
    #[arg(long = "extra-name", value_name = "NAME")]
    pub extra_names: Vec<String>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<u8> {
    let CertsArgs { service, namespace, out, days, extra_names } = args;
    let now = std::time::SystemTime::now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, format!("pullguard webhook CA ({namespace})"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let mut names = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    names.extend(extra_names);
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name.push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now.into();
    leaf.not_after = until.into();
    let leaf_cert = leaf.signed_by(&key, &issuer).context("signing the serving certificate")?;

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, body: &str| {
        let p = out.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
    };
    write("ca.crt", &ca_cert.pem())?;
    write("tls.crt", &leaf_cert.pem())?;
    write("tls.key", &key.serialize_pem())?;
    restrict(&out.join("tls.key"))?;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_cert.pem());
    eprintln!("wrote ca.crt, tls.crt, tls.key to {} for {}", out.display(), names.join(", "));
    println!("{bundle}");
    Ok(0)
}

#[cfg(unix)]
fn restrict(p: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", p.display()))
}

#[cfg(not(unix))]
fn restrict(_: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

// The part of a single sign-on that happens at the identity provider (sim/idp: npm
// oidc-provider's own forms, or the SAML identity provider's): its login form, filled in with
// `login` and `password`, then any consent form, until it sends the tab back to `home`'s
// origin. A SAML response's form submits itself and is left to do so. `onLoginForm` runs
// once, with the login form filled in (for a screenshot).
export async function atIdentityProvider(page, { login, password = 'any', home, timeout, onLoginForm }) {
  const origin = new URL(home).origin;
  let filled = false;
  for (let step = 0; step < 4; step += 1) {
    // Home, or a form to fill in; a page in the middle of moving on is waited out.
    await page.waitForFunction(
      (o) => location.origin === o || (document.readyState === 'complete'
        && document.querySelector('form [type="submit"], form button') !== null
        && document.querySelector('input[name="SAMLResponse"]') === null),
      { timeout, polling: 100 },
      origin,
    );
    if (new URL(page.url()).origin === origin) return;
    if (await page.$('input[name="login"]')) {
      await page.$eval('input[name="login"]', (input) => { input.value = ''; });
      await page.type('input[name="login"]', login);
      await page.type('input[name="password"]', password);
      if (!filled) await onLoginForm?.();
      filled = true;
    }
    await Promise.all([
      page.waitForNavigation({ timeout }),
      page.click('form [type="submit"], form button'),
    ]);
  }
  await page.waitForFunction((o) => location.origin === o, { timeout, polling: 100 }, origin);
}

/** Forgets every site's cookies: the identity provider's session goes, as for a new person. */
export async function forgetCookies(page) {
  const cdp = await page.createCDPSession();
  await cdp.send('Network.clearBrowserCookies');
  await cdp.detach();
}

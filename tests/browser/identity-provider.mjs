// The part of a single sign-on that happens at the identity provider (sim/idp, npm
// oidc-provider's own forms): its login form, filled in with `login` and any password, then its
// consent form, until it sends the tab back to `home`'s origin. `onLoginForm` runs once, with
// the login form filled in (for a screenshot).
export async function atIdentityProvider(page, { login, home, timeout, onLoginForm }) {
  const origin = new URL(home).origin;
  for (let step = 0; step < 4 && new URL(page.url()).origin !== origin; step += 1) {
    await page.waitForSelector('form', { timeout });
    if (await page.$('input[name="login"]')) {
      await page.$eval('input[name="login"]', (input) => { input.value = ''; });
      await page.type('input[name="login"]', login);
      await page.type('input[name="password"]', 'any');
      if (step === 0) await onLoginForm?.();
    }
    await Promise.all([
      page.waitForNavigation({ timeout }),
      page.click('form [type="submit"], form button'),
    ]);
  }
}

/** Forgets every site's cookies: the identity provider's session goes, as for a new person. */
export async function forgetCookies(page) {
  const cdp = await page.createCDPSession();
  await cdp.send('Network.clearBrowserCookies');
  await cdp.detach();
}

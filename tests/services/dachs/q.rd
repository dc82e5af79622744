<resource schema="segaia">
  <meta name="title">Gaia DR3 G &lt; 10, all sky (survey_engine test service)</meta>
  <meta name="description">The 482k-row all-sky Gaia DR3 G&lt;10 table from ../shared/data,
    served on loopback so that survey_engine's TAP client is tested against a real DaCHS.</meta>
  <meta name="creationDate">2026-11-22T00:00:00Z</meta>
  <meta name="subject">stars</meta>
  <meta name="creator.name">survey_engine tests</meta>

  <table id="main" onDisk="True" adql="True" primary="source_id" mixin="//scs#q3cindex">
    <meta name="description">Gaia DR3 sources brighter than G = 10.</meta>
    <column name="source_id" type="bigint" required="True" ucd="meta.id;meta.main"
      description="Gaia DR3 unique source identifier"/>
    <column name="ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main"
      description="Right ascension (ICRS, epoch 2016.0)"/>
    <column name="dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main"
      description="Declination (ICRS, epoch 2016.0)"/>
    <column name="phot_g_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt"
      description="G-band mean magnitude"/>
    <column name="phot_bp_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt.B"
      description="BP mean magnitude (0 where missing)"/>
    <column name="phot_rp_mean_mag" type="real" unit="mag" ucd="phot.mag;em.opt.R"
      description="RP mean magnitude (0 where missing)"/>
  </table>

  <data id="import">
    <publish/>
    <sources>data/gaia.csv</sources>
    <csvGrammar/>
    <make table="main">
      <rowmaker idmaps="*"/>
    </make>
  </data>
</resource>
